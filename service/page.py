"""The search page served at `GET /`: one self-contained HTML file, no build step, no external assets.

It calls the JSON API like any client: `/search` for the student's top-k and, with the rerank box
ticked, `/search` with `rerank: true` for the teacher's reorder of the same query, shown side by
side (each hit marked with its rank in the other list) so a person can see what reranking changes.
Text is inserted with `textContent` only, never as HTML. With auth on, the key typed into the page
is kept in the tab's sessionStorage and sent as `X-API-Key`.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kd-search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
  form { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin-bottom: 1rem; }
  input[type=search] { flex: 1 1 24rem; font-size: 1.05rem; padding: .45rem; }
  input[type=number] { width: 4.5rem; padding: .35rem; }
  button { font-size: 1rem; padding: .45rem 1rem; }
  #status { color: #555; margin: .4rem 0 1rem; min-height: 1.2rem; }
  #status.error { color: #a00; }
  .cols { display: grid; grid-template-columns: 1fr; gap: 1.5rem; }
  .cols.two { grid-template-columns: 1fr 1fr; }
  h2 { font-size: 1.05rem; margin: 0 0 .3rem; }
  .latency { color: #666; font-size: .85rem; margin-bottom: .6rem; }
  ol { padding-left: 1.4rem; margin: 0; }
  li.hit { margin-bottom: .9rem; }
  .title { font-weight: 600; }
  .score, .moved { color: #666; font-size: .8rem; margin-left: .4rem; }
  .snippet { font-size: .9rem; color: #333; margin-top: .15rem; }
  .docid { color: #888; font-size: .75rem; }
  #keyrow[hidden] { display: none; }
</style>
</head>
<body>
<h1>kd-search</h1>
<p class="latency" id="mode"></p>
<form id="search-form">
  <input id="query" name="query" type="search" placeholder="Ask about Python..." required maxlength="1000" autofocus>
  <label>k <input id="k" name="k" type="number" min="1" max="100" value="10"></label>
  <label><input id="rerank" name="rerank" type="checkbox" checked> rerank with the teacher</label>
  <label id="keyrow" hidden>API key <input id="apikey" type="password" autocomplete="off"></label>
  <button id="go" type="submit">Search</button>
</form>
<div id="status" role="status"></div>
<div id="cols" class="cols">
  <section id="student-col"><h2>Student (distilled) top-k</h2><div class="latency" id="student-latency"></div>
    <ol id="student-results"></ol></section>
  <section id="rerank-col" hidden><h2>Reranked by the teacher</h2><div class="latency" id="rerank-latency"></div>
    <ol id="rerank-results"></ol></section>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SNIPPET = 240;
let limits = null;

async function loadInfo() {
  try {
    const r = await fetch("/ready", { headers: headers() });
    if (r.status === 401) { $("keyrow").hidden = false; return; }
    const info = await r.json();
    limits = info.limits;
    $("mode").textContent = info.mode === "asymmetric"
      ? "asymmetric: the teacher's passage embeddings, queries by the student " + info.student.name
      : "symmetric: passages and queries by the student " + info.student.name;
    $("k").max = String(info.limits.max_k);
    if (!info.rerank_available) { $("rerank").checked = false; $("rerank").disabled = true; }
    if (info.auth === "api_key") { $("keyrow").hidden = false; }
  } catch (e) { /* the search itself reports errors */ }
}

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("apikey").value || sessionStorage.getItem("kd-api-key") || "";
  if (key) { h["x-api-key"] = key; }
  return h;
}

async function search(query, k, rerank) {
  const body = { query: query, k: k };
  if (rerank) { body.rerank = true; body.rerank_depth = Math.max(k, Math.min(100, limits ? limits.max_rerank_depth : 100)); }
  const t0 = performance.now();
  const r = await fetch("/search", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) { throw new Error((data && data.detail) || ("HTTP " + r.status)); }
  data.client_ms = performance.now() - t0;
  return data;
}

function render(listId, latencyId, data, other) {
  const list = $(listId);
  list.replaceChildren();
  const otherRank = new Map((other ? other.results : []).map((h) => [h.doc_id, h.rank]));
  for (const hit of data.results) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.docId = hit.doc_id;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = hit.title || hit.doc_id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "score " + hit.score.toFixed(4);
    li.append(title, score);
    if (other) {
      const moved = document.createElement("span");
      moved.className = "moved";
      const was = otherRank.get(hit.doc_id);
      moved.textContent = was === undefined ? "(not in the other list)" : "(#" + was + " in the other list)";
      li.append(moved);
    }
    const snippet = document.createElement("div");
    snippet.className = "snippet";
    snippet.textContent = hit.text.length > SNIPPET ? hit.text.slice(0, SNIPPET) + "..." : hit.text;
    const docid = document.createElement("div");
    docid.className = "docid";
    docid.textContent = hit.doc_id;
    li.append(snippet, docid);
    list.append(li);
  }
  $(latencyId).textContent = data.total_results + " results, server " + data.latency_ms.toFixed(1) +
    " ms, round trip " + data.client_ms.toFixed(1) + " ms";
}

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const query = $("query").value;
  const k = Math.max(1, parseInt($("k").value, 10) || 10);
  const rerank = $("rerank").checked && !$("rerank").disabled;
  if ($("apikey").value) { sessionStorage.setItem("kd-api-key", $("apikey").value); }
  $("status").className = "";
  $("status").textContent = "searching...";
  $("go").disabled = true;
  try {
    const student = await search(query, k, false);
    const reranked = rerank ? await search(query, k, true) : null;
    render("student-results", "student-latency", student, reranked);
    $("rerank-col").hidden = !reranked;
    $("cols").className = reranked ? "cols two" : "cols";
    if (reranked) { render("rerank-results", "rerank-latency", reranked, student); }
    $("status").textContent = "";
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = String(e.message || e);
  } finally {
    $("go").disabled = false;
  }
});
loadInfo();
</script>
</body>
</html>
"""
