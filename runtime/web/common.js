// Shared by the config and run pages (inlined by the node at serve time: no external asset).
// Every value from the server is set as text, never as HTML, with control characters, lone
// surrogates and bidi overrides shown as escapes (runtime/text.py's `visible`, the same set;
// status.html has its own copy).
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;
const NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"};
function visible(text) {
  return String(text).replace(UNSAFE, ch => {
    if (NAMED[ch]) return NAMED[ch];
    const code = ch.charCodeAt(0);
    return code <= 0xff ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
  });
}
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
