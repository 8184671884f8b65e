"""Helpers for the report tests: reading the HTML report like a tool would, versions written
straight into git (many of them, without uploading each), Debian's headless Chromium with a
proxy that would see any request, and a PNG reader (zlib alone) to look at its screenshot.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from cp_manage.artifacts import VersionInfo

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
"""Files the tests keep for people to look at (git-ignored); listed at the end of the run."""

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Debian's chromium is not installed (scripts/bootstrap.sh test installs it)"


# -- the report as a tool reads it -----------------------------------------------------------------


@dataclass
class Chart:
    series: str
    points: int = 0
    values: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)


@dataclass
class Page:
    """What the report holds: its charts, its tables' rows, every attribute value."""

    charts: dict[str, list[Chart]] = field(default_factory=dict)
    """The charts of each section (``model-charts``, ``data-charts``)."""
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    """Body rows of each table by class (``versions``, ``lineage``, ``files``,
    ``stage-history``), cells as text; several tables of one class are one list."""
    sections: list[str] = field(default_factory=list)
    timelines: list[int] = field(default_factory=list)
    """The number of events of each stage timeline."""
    attributes: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    scrolling: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.section = ""
        self.chart: Chart | None = None
        self.text_class: str | None = None
        self.table: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.title_depth = 0
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.page.tags.add(tag)
        self.page.attributes += attributes.values()
        css = attributes.get("class", "")
        if tag == "section":
            self.section = attributes.get("id", "")
            self.page.sections.append(self.section)
        elif tag == "svg" and css == "chart":
            self.chart = Chart(attributes["data-series"])
            self.page.charts.setdefault(self.section, []).append(self.chart)
        elif tag == "svg" and css == "timeline":
            self.page.timelines.append(int(attributes["data-events"]))
        elif tag == "title":
            self.title_depth += 1
        elif self.chart is not None and "point" in css.split():
            self.chart.points += 1
        elif tag == "text":
            self.text_class = css
        elif tag == "table":
            self.table = css
            self.page.tables.setdefault(css, [])
        elif tag == "thead":
            self.in_head = True
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "div" and css == "scroll":
            self.page.scrolling += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.chart = None
        elif tag == "title":
            self.title_depth -= 1
        elif tag == "text":
            self.text_class = None
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.table is not None:
            if self.row and not self.in_head:
                self.page.tables[self.table].append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None
        elif tag == "thead":
            self.in_head = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.title_depth or self.chart is None or self.text_class is None:
            return
        kind = {"value": self.chart.values, "version": self.chart.versions,
                "stage-now": self.chart.stages, "stage-was": self.chart.stages}
        if self.text_class in kind:
            kind[self.text_class].append(data)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page


# -- many versions without many uploads ------------------------------------------------------------


def write_versions(root: Path, infos: list[VersionInfo], *, commit: str) -> None:
    """Tag ``commit`` of the clone at ``root`` once per version, each tag carrying ``info``'s
    metadata exactly as cpv writes it, in one ``git fast-import``; then push the tags."""
    stream = []
    for info in infos:
        message = info.tag_message().encode()
        stream.append(f"tag {info.tag}\nfrom {commit}\n"
                      f"tagger Test Engineer <test@example.com> 1700000000 +0000\n"
                      f"data {len(message)}\n".encode() + message + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=b"".join(stream),
                   check=True, timeout=120)
    subprocess.run(["git", "push", "--quiet", "origin", "--tags"], cwd=root, check=True,
                   timeout=120, capture_output=True)


def synthetic_versions(count: int, *, team: str, model: str, start: int = 1
                       ) -> list[VersionInfo]:
    """``count`` model versions ``v0.<start>`` ... with two metrics that improve noisily."""
    infos = []
    for n in range(start, start + count):
        infos.append(VersionInfo(
            kind="model", version=f"v0.{n}", tag=f"v0.{n}", path="model.bin",
            md5=f"{n:032x}", size_bytes=1000 + n, metrics={
                "accuracy": round(0.5 + 0.4 * n / (start + count) + (n % 7) / 200, 4),
                "loss": round(2.0 / (n + 1) + (n % 5) / 100, 4)},
            created_at=f"2024-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            author="Test Engineer <test@example.com>", message=f"epoch {n}",
            cpv_version="0.1.0", team=team, model=model, data_version=None))
    return infos


# -- Chromium --------------------------------------------------------------------------------------


@dataclass
class BrowserRun:
    page_requests: list[str]
    """URLs the page asked for (the net log's requests made on behalf of the document)."""
    own_requests: list[str]
    """URLs Chromium asked for by itself (updates, accounts): never the page's."""
    proxied: list[str]
    """The first line of each connection the proxy received."""


@contextmanager
def listening_proxy() -> Iterator[tuple[int, list[str]]]:
    """A TCP listener on 127.0.0.1 that records the first line of every connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    seen: list[str] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    seen.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                except OSError as e:
                    seen.append(repr(e))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()
        thread.join(timeout=10)


def open_in_chromium(page: Path, screenshot: Path, *, scratch: Path,
                     size: tuple[int, int] = (1280, 2000)) -> BrowserRun:
    """Render ``page`` in headless Chromium into ``screenshot``, every request it makes sent
    to a proxy on 127.0.0.1 (loopback too), with a net log telling the page's requests from
    Chromium's own."""
    assert CHROMIUM is not None
    scratch.mkdir(parents=True, exist_ok=True)
    netlog = scratch / "netlog.json"
    with listening_proxy() as (port, proxied):
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--force-color-profile=srgb", "--disable-extensions", "--no-first-run",
             "--disable-background-networking", f"--user-data-dir={scratch / 'profile'}",
             f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>",
             f"--log-net-log={netlog}", f"--window-size={size[0]},{size[1]}",
             f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0 and screenshot.is_file(), result.stderr[-3000:]
    page_requests, own_requests = _requests(json.loads(netlog.read_text()))
    return BrowserRun(page_requests, own_requests, list(proxied))


def _requests(log: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The net log's URL requests: the document's (their initiator is the page, whose
    network isolation key is the file:// site) and the browser's (initiator "not an origin")."""
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    page, own = [], []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] != start or "url" not in params:
            continue
        by_browser = params.get("initiator") == "not an origin" and not str(
            params.get("network_isolation_key", "")).startswith("file:")
        (own if by_browser else page).append(params["url"])
    return page, own


# -- the screenshot --------------------------------------------------------------------------------


@dataclass
class Image:
    width: int
    rows: list[bytes]
    """RGB, 3 bytes a pixel."""

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]


def read_png(path: Path, *, max_rows: int | None = None) -> Image:
    """The top ``max_rows`` rows of an 8-bit RGB or RGBA PNG, as RGB (alpha dropped)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    assert depth == 8 and interlace == 0 and colour_type in (2, 6), (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(min(height, max_rows or height)):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(raw[start], line, previous, bpp)
        rows.append(bytes(line) if bpp == 3 else bytes(
            b for i, b in enumerate(line) if i % 4 != 3))
        previous = line
    return Image(width, rows)


def _unfilter(kind: int, line: bytearray, above: bytearray, bpp: int) -> None:
    if kind == 1:
        for i in range(bpp, len(line)):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif kind == 2:
        line[:] = bytes((a + b) & 255 for a, b in zip(line, above, strict=True))
    elif kind == 3:
        for i in range(len(line)):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + above[i]) >> 1)) & 255
    elif kind == 4:
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b, c = above[i], (above[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255


Box = tuple[int, int, int, int]
"""left, top, right, bottom (exclusive)."""


def regions(image: Image, colour: tuple[int, int, int], *, min_width: int = 200,
            gap: int = 4) -> list[Box]:
    """The boxes painted ``colour`` (such as each chart's plot area): runs of rows holding at
    least ``min_width`` pixels of it (lines across it, up to ``gap`` rows, do not end a run),
    each with the span of columns where it is."""
    wanted = bytes(colour)
    boxes: list[Box] = []
    current: list[int] | None = None
    for y, row in enumerate(image.rows):
        xs = [x for x in range(image.width) if row[3 * x:3 * x + 3] == wanted]
        if len(xs) >= min_width:
            if current is None:
                current = [xs[0], y, xs[-1] + 1, y + 1]
            else:
                current = [min(current[0], xs[0]), current[1], max(current[2], xs[-1] + 1),
                           y + 1]
        elif current is not None and y - current[3] >= gap:
            boxes.append((current[0], current[1], current[2], current[3]))
            current = None
    if current is not None:
        boxes.append((current[0], current[1], current[2], current[3]))
    return boxes


def blobs(image: Image, box: Box, colour: tuple[int, int, int], *, min_pixels: int = 6) -> int:
    """How many separate patches of exactly ``colour`` (such as marker fills) ``box`` holds."""
    left, top, right, bottom = box
    wanted = bytes(colour)
    todo = {(x, y) for y in range(top, bottom) for x in range(left, right)
            if image.rows[y][3 * x:3 * x + 3] == wanted}
    count = 0
    while todo:
        stack = [todo.pop()]
        size = 0
        while stack:
            x, y = stack.pop()
            size += 1
            for near in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if near in todo:
                    todo.remove(near)
                    stack.append(near)
        count += size >= min_pixels
    return count


def inked(image: Image, box: Box, background: tuple[int, int, int]) -> int:
    """Pixels inside ``box`` that are neither ``background`` nor white: what was drawn."""
    left, top, right, bottom = box
    plain = {bytes(background), b"\xff\xff\xff"}
    return sum(image.rows[y][3 * x:3 * x + 3] not in plain
               for y in range(top, bottom) for x in range(left, right))
