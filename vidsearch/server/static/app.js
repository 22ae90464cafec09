"use strict";
// vidsearch web app: plain JavaScript, no build step, nothing fetched from outside this server.

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};
const clock = (s) => {
  s = Math.max(0, s || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(sec).padStart(2, "0")}`;
};
const bytes = (n) => n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`;

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

// ---- pages ------------------------------------------------------------------------------------

const pages = ["search", "viewer", "dupes", "library"];
function show() {
  const name = (location.hash.slice(1).split("?")[0]) || "search";
  for (const p of pages) {
    $(`#page-${p}`).hidden = p !== name;
    $(`#nav-${p}`).classList.toggle("active", p === name);
  }
  if (name === "library") refreshLibrary();
  if (name === "dupes" && !$("#dupes").childElementCount) loadDupes();
}
window.addEventListener("hashchange", show);

// ---- search -----------------------------------------------------------------------------------

let lastQuery = null;  // {kind: "file", file, url} or {kind: "video", id}

const drop = $("#drop"), fileInput = $("#file");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) { fileInput.files = e.dataTransfer.files; searchUpload(); }
});
fileInput.addEventListener("change", () => { drop.querySelector("span").textContent = fileInput.files[0]?.name || ""; });
$("#upload-form").addEventListener("submit", (e) => { e.preventDefault(); searchUpload(); });
$("#range-form").addEventListener("submit", (e) => { e.preventDefault(); searchRange(); });

async function searchUpload() {
  const file = fileInput.files[0];
  if (!file) { $("#search-status").textContent = "choose a video or an image first"; return; }
  const form = new FormData();
  form.append("file", file);
  for (const [id, key] of [["#up-start", "start"], ["#up-end", "end"], ["#up-k", "k"]]) if ($(id).value) form.append(key, $(id).value);
  if (lastQuery?.url) URL.revokeObjectURL(lastQuery.url);
  lastQuery = { kind: "file", file, url: URL.createObjectURL(file), name: file.name };
  await runSearch(() => api("/api/search", { method: "POST", body: form }));
}

let videoNames = new Map();
async function loadVideoList() {
  const body = await api("/api/videos?limit=1000");
  const list = $("#video-list");
  list.replaceChildren();
  videoNames = new Map();
  for (const v of body.videos.filter((v) => v.status === "indexed")) {
    videoNames.set(v.path, v.id);
    list.append(el("option", { value: v.path }));
  }
}

async function searchRange() {
  const id = videoNames.get($("#range-video").value);
  if (!id) { $("#search-status").textContent = "pick an indexed video from the list"; return; }
  const payload = { video_id: id, k: Number($("#up-k").value || 10) };
  if ($("#range-start").value) payload.start = Number($("#range-start").value);
  if ($("#range-end").value) payload.end = Number($("#range-end").value);
  lastQuery = { kind: "video", id, name: $("#range-video").value };
  await runSearch(() => api("/api/search", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) }));
}

async function runSearch(call) {
  $("#search-status").textContent = "searching…";
  $("#results").replaceChildren();
  const started = performance.now();
  try {
    const result = await call();
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    $("#search-status").textContent = `${result.results.length} videos for ${result.query} ` +
      `[${clock(result.query_start)}–${clock(result.query_end)}], ${result.query_clips} clips, ${secs} s`;
    $("#results").replaceChildren(...result.results.map((r, i) => resultCard(r, i)));
  } catch (err) {
    $("#search-status").textContent = `search failed: ${err.message}`;
  }
}

function timeline(duration, segments, startKey, endKey, common = []) {
  const bar = el("div", { class: "timeline", title: "matched ranges on the library video (common footage in grey)" });
  for (const [list, cls] of [[segments, "seg"], [common, "seg common"]]) {
    for (const s of list) {
      const left = (100 * s[startKey]) / duration, width = Math.max(0.8, (100 * (s[endKey] - s[startKey])) / duration);
      bar.append(el("div", { class: cls, style: `left:${left}%;width:${width}%` }));
    }
  }
  return bar;
}

// what `vidsearch search` prints for footage that many unrelated videos share
const commonMark = (r) => `common footage: appears in ${r.appears_in} videos`;

function segmentLines(r, segments, label) {
  return segments.map((s, i) => el("div", { class: "row segment-line" },
    el("span", {}, `query ${clock(s.query_start)}–${clock(s.query_end)} ↔ library ${clock(s.library_start)}–${clock(s.library_end)}`),
    el("span", { class: "muted" }, `similarity ${s.similarity.toFixed(3)} · ${s.clips} clips · score ${s.score.toFixed(2)}`),
    label ? el("span", { class: "badge common" }, label) : [],
    el("button", { class: "plain open-viewer", onclick: () => openViewer(lastQuery, { kind: "video", id: r.video_id, name: r.path }, s, r.segments, r.common_segments) }, "Open in viewer")));
}

// A common match (its best footage is common) is marked and lists its common segments first;
// an ordinary one lists them after its own, each marked. The server sends common matches last.
function resultCard(r, rank) {
  const common = r.common_segments;
  const shown = r.common ? [...common, ...r.segments] : [...r.segments, ...common];
  const duration = r.duration_s || Math.max(...shown.map((s) => s.library_end));
  const thumbs = shown.flatMap((s) => {
    const n = Math.min(4, Math.max(1, Math.round((s.library_end - s.library_start) / 2)));
    return Array.from({ length: n }, (_, i) => s.library_start + ((s.library_end - s.library_start) * i) / n);
  }).slice(0, 8);
  const plain = el("div", { class: "segments" }, segmentLines(r, r.segments, null));
  const shared = common.length ? el("div", { class: "segments common-segments" },
    segmentLines(r, common, r.common ? "common footage" : commonMark(r))) : [];
  return el("article", { class: r.common ? "card result common" : "card result", "data-video-id": r.video_id },
    el("h3", {}, `${rank + 1}. ${r.path}`, r.common ? [" ", el("span", { class: "badge common" }, commonMark(r))] : []),
    el("div", { class: "strip" }, thumbs.map((t) => el("img", { src: `/api/videos/${r.video_id}/thumbnail?t=${t.toFixed(1)}`, alt: `frame at ${clock(t)}`, loading: "lazy" }))),
    timeline(duration, r.segments, "library_start", "library_end", common),
    r.common ? [shared, plain] : [plain, shared],
  );
}

// ---- viewer -----------------------------------------------------------------------------------

const left = $("#left"), right = $("#right");
let view = null;  // {leftSide, rightSide, segments, offset}

async function sideSource(side, from) {
  if (side.kind === "file") return { src: side.url, base: 0, duration: null };
  const meta = await api(`/api/videos/${side.id}`);
  if (meta.stream) return { src: meta.stream, base: 0, duration: meta.duration_s };
  const base = Math.max(0, from - 5);
  return { src: `${meta.preview}?start=${base.toFixed(3)}&end=${(base + 120).toFixed(3)}`, base, duration: meta.duration_s };
}

// Opens two videos side by side at ``seg`` (one of ``segments``, or of ``common``: the footage
// they share with many unrelated videos, drawn in grey on the scrubbers and named in the title).
async function openViewer(leftSide, rightSide, seg, segments, common = [], names = ["query", "library"]) {
  const [qs, rs] = [seg.query_start ?? seg.a_start, seg.library_start ?? seg.b_start];
  location.hash = "#viewer";
  const [ls, rsrc] = await Promise.all([sideSource(leftSide, qs), sideSource(rightSide, rs)]);
  view = { leftSide, rightSide, segments, common, offset: rs - qs, left: ls, right: rsrc, start: { left: qs, right: rs },
           keys: seg.query_start !== undefined ? ["query", "library"] : ["a", "b"] };
  window.vidsearchView = view;  // for the browser test and for the curious
  $("#left-caption").textContent = `${names[0]}: ${leftSide.name}`;
  $("#right-caption").textContent = `${names[1]}: ${rightSide.name}`;
  const span = (s) => `${clock(s[view.keys[0] + "_start"])}–${clock(s[view.keys[0] + "_end"])} ↔ ${clock(s[view.keys[1] + "_start"])}–${clock(s[view.keys[1] + "_end"])}`;
  $("#viewer-title").textContent = [segments.map(span).join(", "), common.length ? `common footage ${common.map(span).join(", ")}` : ""]
    .filter(Boolean).join("; ");
  const canDecide = leftSide.kind === "video" && rightSide.kind === "video";
  $("#verdict-same").disabled = $("#verdict-not").disabled = !canDecide;
  $("#verdict-status").textContent = canDecide ? "" : "verdicts are for two indexed videos";
  left.src = ls.src; right.src = rsrc.src;
  await Promise.all([ready(left), ready(right)]);
  left.currentTime = qs - ls.base;
  right.currentTime = rs - rsrc.base;
  drawScrubbers();
}

const ready = (video) => new Promise((resolve) => {
  if (video.readyState >= 1) resolve();
  else { video.addEventListener("loadedmetadata", resolve, { once: true }); video.addEventListener("error", resolve, { once: true }); }
});

// original time of each side ↔ the player's own time
const origTime = (video) => video.currentTime + (video === left ? view.left.base : view.right.base);
function follow(leader) {
  if (!view || !$("#locked").checked) return;
  const other = leader === left ? right : left;
  const t = leader === left ? origTime(left) + view.offset : origTime(right) - view.offset;
  const local = t - (other === left ? view.left.base : view.right.base);
  if (Math.abs(other.currentTime - local) > 0.25) other.currentTime = Math.max(0, local);
}
for (const [a, b] of [[left, right], [right, left]]) {
  a.addEventListener("seeked", () => follow(a));
  a.addEventListener("play", () => { if ($("#locked").checked && b.paused) { follow(a); b.play().catch(() => {}); } });
  a.addEventListener("pause", () => { if ($("#locked").checked && !b.paused) b.pause(); });
  a.addEventListener("timeupdate", drawScrubbers);
}
$("#play-both").addEventListener("click", () => { left.paused ? (left.play(), right.play()) : (left.pause(), right.pause()); });

function drawScrubbers() {
  if (!view) return;
  for (const [video, scrub, side, key] of [[left, "#left-scrub", view.left, view.keys[0]], [right, "#right-scrub", view.right, view.keys[1]]]) {
    const duration = side.duration || (video.duration + side.base) || 1;
    const bar = $(scrub);
    const mark = (cls, title) => (s) => el("div", { class: cls, title,
      style: `left:${(100 * s[key + "_start"]) / duration}%;width:${Math.max(0.5, (100 * (s[key + "_end"] - s[key + "_start"])) / duration)}%` });
    bar.replaceChildren(
      ...view.segments.map(mark("seg", "matched footage")),
      ...view.common.map(mark("seg common", "common footage: many unrelated videos share it")),
      el("div", { class: "head", style: `left:${(100 * origTime(video)) / duration}%` }));
    bar.onclick = (e) => {
      const t = ((e.offsetX / bar.clientWidth) * duration) - side.base;
      video.currentTime = Math.max(0, t);
    };
  }
}

async function decide(verdict, a = view?.leftSide.id, b = view?.rightSide.id) {
  try {
    await api("/api/decisions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ a, b, verdict }) });
    $("#verdict-status").textContent = `recorded: ${verdict.replaceAll("_", " ")}`;
    $("#dupes").replaceChildren();
    return true;
  } catch (err) {
    $("#verdict-status").textContent = `not recorded: ${err.message}`;
    return false;
  }
}
$("#verdict-same").addEventListener("click", () => decide("same"));
$("#verdict-not").addEventListener("click", () => decide("not_a_match"));

// ---- duplicates -------------------------------------------------------------------------------

$("#dupes-go").addEventListener("click", loadDupes);
$("#dupes-sort").addEventListener("change", loadDupes);

async function loadDupes() {
  $("#dupes-status").textContent = "finding duplicates…";
  const threshold = $("#dupes-threshold").value;
  try {
    const [report, list] = await Promise.all([
      api(`/api/dupes?groups=true${threshold ? `&threshold=${threshold}` : ""}`),
      api("/api/videos?limit=1000"),
    ]);
    const meta = new Map(list.videos.map((v) => [v.id, v]));
    const groups = report.groups.map((g) => {
      const videos = g.videos.map((v) => meta.get(v.id) && { ...meta.get(v.id), codec: v.codec }).filter(Boolean);
      videos.sort((x, y) => (y.duration_s - x.duration_s) || ((y.width || 0) * (y.height || 0) - (x.width || 0) * (x.height || 0)));
      const keeper = videos[0];
      const pairs = report.pairs.filter((p) => videos.some((v) => v.id === p.a_id) && videos.some((v) => v.id === p.b_id));
      return { keeper, videos, pairs, freed: videos.slice(1).reduce((n, v) => n + (v.size_bytes || 0), 0),
               score: Math.max(0, ...pairs.map((p) => p.score)) };
    });
    groups.sort((x, y) => $("#dupes-sort").value === "space" ? y.freed - x.freed : y.score - x.score);
    const hidden = report.hidden_by_decisions ? `, ${report.hidden_by_decisions} decided pairs hidden` : "";
    const common = report.common_clips ? `; ${report.common_clips} clips of footage in more than ${report.common_min_videos} unrelated videos are common, not evidence` : "";
    $("#dupes-status").textContent = `${groups.length} groups, ${report.pairs.length} pairs at threshold ${report.threshold.toFixed(4)} (${report.threshold_source})${hidden}${common}`;
    $("#dupes").replaceChildren(...groups.map(groupCard));
  } catch (err) {
    $("#dupes-status").textContent = `failed: ${err.message}`;
  }
}

function relationTo(keeper, v, pairs) {
  const p = pairs.find((p) => (p.a_id === keeper.id && p.b_id === v.id) || (p.b_id === keeper.id && p.a_id === v.id));
  if (!p) return { text: "via another copy", pair: null };
  const swap = { contains: "inside", inside: "contains" };
  return { text: p.a_id === keeper.id ? p.relation : (swap[p.relation] || p.relation), pair: p };
}

// The footage a pair shares with many unrelated videos (an intro): listed, but not evidence.
function commonParts(p, v) {
  const [here, there] = p.a_id === v.id ? ["a", "b"] : ["b", "a"];
  return el("div", { class: "common-segments" }, p.common_segments.map((s) => el("div", { class: "segment-line muted" },
    el("span", { class: "badge common" }, "common footage"),
    ` ${clock(s[here + "_start"])}–${clock(s[here + "_end"])} here ↔ ${clock(s[there + "_start"])}–${clock(s[there + "_end"])} in the keeper`)));
}

function groupCard(g) {
  const rows = g.videos.map((v, i) => {
    const rel = i === 0 ? { text: "suggested keeper", pair: null } : relationTo(g.keeper, v, g.pairs);
    const p = rel.pair;
    const actions = p ? [
      el("button", { class: "plain", onclick: () => {
        const [a, b] = p.a_id === g.keeper.id ? [g.keeper, v] : [v, g.keeper];
        openViewer({ kind: "video", id: a.id, name: a.path }, { kind: "video", id: b.id, name: b.path }, p.segments[0], p.segments, p.common_segments, ["a", "b"]);
      } }, "Open"),
      el("button", { class: "plain", onclick: async () => { if (await decide("not_a_match", p.a_id, p.b_id)) loadDupes(); } }, "Not a match"),
      el("button", { class: "plain", onclick: async () => { if (await decide("keep_both", p.a_id, p.b_id)) loadDupes(); } }, "Keep both"),
    ] : [];
    return el("tr", { "data-video-id": v.id },
      el("td", {}, el("img", { src: v.thumbnail + "?t=1", alt: "", height: 48, loading: "lazy" })),
      el("td", { class: "path" }, v.path, el("br"), el("span", { class: i === 0 ? "badge keep" : "badge" }, rel.text),
        p?.common_segments.length ? commonParts(p, v) : []),
      el("td", {}, clock(v.duration_s)), el("td", {}, v.width ? `${v.width}×${v.height}` : "?"), el("td", {}, v.codec || "?"),
      el("td", {}, bytes(v.size_bytes || 0)), el("td", {}, actions));
  });
  return el("article", { class: "card group" },
    el("h3", {}, `${g.videos.length} copies · frees ${bytes(g.freed)} · best score ${g.score.toFixed(2)}`),
    el("table", {}, el("tr", {}, ["", "path", "duration", "resolution", "codec", "size", ""].map((h) => el("th", {}, h))), rows));
}

// ---- library and the running job ---------------------------------------------------------------

async function refreshLibrary() {
  try {
    const st = await api("/api/status");
    const rows = [["videos indexed", st.videos_indexed], ["videos failed", st.videos_failed], ["clips", st.clips],
      ["indexed footage", clock(st.total_duration_s)], ["model", `${st.model} (${st.pooling}, ${st.dim}-d)`],
      ["index type", st.index_type + (st.index_type_pinned ? " (pinned)" : "")], ["size on disk", bytes(st.size_bytes)],
      ["duplicate threshold", st.duplicate_threshold ?? "default"]];
    $("#library-stats").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#library-failed").replaceChildren(...(st.failed.length ? st.failed.map((f) => el("li", {}, el("span", { class: "path" }, f.path), ": ", el("span", { class: "muted" }, f.error))) : [el("li", { class: "muted" }, "none")]));
    showJob(st.job);
  } catch (err) {
    $("#library-stats").replaceChildren(el("dd", {}, `cannot read the index: ${err.message}`));
  }
}

function showJob(job) {
  const text = job ? `indexing ${job.videos_done}/${job.videos_total} videos, ${job.clips_per_s.toFixed(1)} clips/s` +
    (job.eta_s != null ? `, about ${clock(job.eta_s)} left` : "") : "";
  $("#job").textContent = text;
  const target = $("#library-job");
  target.replaceChildren(job ? el("span", {}, el("progress", { max: job.videos_total, value: job.videos_done }), " ", text) : "no index job is running");
}

setInterval(() => { if (!$("#page-library").hidden) refreshLibrary(); else api("/api/status").then((s) => showJob(s.job)).catch(() => {}); }, 2000);

// keyboard: space plays both, s / n record a verdict, 1–4 switch pages
document.addEventListener("keydown", (e) => {
  if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
  if (!$("#page-viewer").hidden) {
    if (e.key === " ") { e.preventDefault(); $("#play-both").click(); }
    if (e.key === "s" && !$("#verdict-same").disabled) decide("same");
    if (e.key === "n" && !$("#verdict-not").disabled) decide("not_a_match");
  }
  if (["1", "2", "3", "4"].includes(e.key)) location.hash = "#" + pages[Number(e.key) - 1];
});

loadVideoList().catch(() => {});
show();
