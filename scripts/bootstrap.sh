#!/usr/bin/env bash
# Create .venv and install cpv into it (with the test tools when asked: bootstrap.sh test).
# Pinned by constraints.txt so a fresh machine resolves in one pass, then checked by pip check.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"
stamp=".venv/.cpv-installed-${extra:-main}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade "pip>=24" >/dev/null
  spec="."
  [ "$extra" = "test" ] && spec=".[test]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c constraints.txt -e "$spec"
  .venv/bin/python -m pip check
  echo "$want" > "$stamp"
fi
if [ "$extra" = "test" ] && ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  # The SSH git-host tests run a real sshd on loopback.
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server) >/dev/null
  else
    echo "warning: sshd is not installed; the SSH tests will be skipped" >&2
  fi
fi
if [ "$extra" = "test" ] && ! command -v mkfs.xfs >/dev/null 2>&1; then
  # The background queue's reflink test makes a small XFS file system on a loop device.
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs) >/dev/null
  else
    echo "warning: mkfs.xfs is not installed; the reflink test will be skipped" >&2
  fi
fi
if [ "$extra" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  # The report tests open the HTML report in a real headless browser.
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "warning: chromium is not installed; the report's browser tests will be skipped" >&2
  fi
fi
