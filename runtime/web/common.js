// Shared by the config and run pages (inlined by the node at serve time: no external asset).
// Every value from the server is set as text, never as HTML, with control characters, lone
// surrogates and bidi overrides shown as escapes (visible.js).
/* visible.js */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, visible(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
  }
  return node;
}
function fill(id, ...children) { document.getElementById(id).replaceChildren(...children.flat(Infinity)); }
function when(v) { return v ? String(v).replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"; }
function num(v, d = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
function idFromPath() { const m = location.pathname.match(/\/(\d{1,18})\/?$/); return m ? m[1] : null; }
async function getJson(path) {
  const res = await fetch(path, {cache: "no-store"});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
  return body;
}
function showError(id, e) { fill(id, el("p", {class: "bad"}, visible(e.message || e))); }
