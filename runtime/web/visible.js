// Plugin text shown as text: control characters, lone surrogates and bidi overrides as escapes
// (the same set as runtime/text.py's `visible`). Inlined into every page by runtime/http.py.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;
const NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"};
function visible(text) {
  return String(text).replace(UNSAFE, ch => {
    if (NAMED[ch]) return NAMED[ch];
    const code = ch.charCodeAt(0);
    return code <= 0xff ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
  });
}
