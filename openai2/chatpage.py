"""The chat page that ``openai2 serve`` shows at ``/``: one self-contained HTML document.

One job: the bytes of the page.  Inline CSS and JavaScript, no external resource of any kind
(no fonts, images, scripts or styles from elsewhere), so it works offline and leaks nothing.
The page talks only to the gateway that served it (``v1/models``, ``v1/chat/completions``
with ``stream: true``, read by hand from a ``ReadableStream``), keeps its conversations in the
browser's ``localStorage`` and exports/imports them in the ``Chat.dump`` archive format
(``openai2.history``'s ``{"format", "version", "messages", "pinned"}``).

Safety: whatever a model or a user wrote reaches the DOM only as text (``textContent``,
``createElement``; a small Markdown subset builds elements, links only to http(s)/mailto URLs,
with ``rel="noopener noreferrer"``).  :data:`CHAT_PAGE_CSP` forbids everything but the page's own
inline script and style (by their sha256) and requests to the page's own origin, so even a
mistake that put HTML in the page would run nothing.

Changing the script or the style changes their hashes: tests/test_chatpage.py recomputes them
and, when :data:`CHAT_PAGE_CSP` is stale, its failure message gives the new value.

The page is built on the first call of :func:`chat_page` and cached; importing this module
only binds string constants.
"""

from __future__ import annotations

#: The ``Content-Security-Policy`` header value to send with :func:`chat_page` (any variant:
#: the script and style are the same in all of them).  The hashes are those of the inline
#: ``<script>`` and ``<style>`` exactly as written below.
CHAT_PAGE_CSP = (
    "default-src 'none'; "
    "script-src 'sha256-0oQ8h6DXB0DAsSvp/NPzsd+XZIETHQCBrs7RRA4LWbo='; "
    "style-src 'sha256-qBO/0VOC3PvDcJryuF5G2M18+dTpPtIV/lA3mq0bYig='; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CHATPAGE_STYLE = """
:root {
  color-scheme: light dark;
  --bg: #ffffff; --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --side: #f6f8fa;
  --user: #ddf4ff; --code: #f3f4f6; --accent: #0969da; --accent-fg: #ffffff; --error: #cf222e;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --fg: #e6edf3; --muted: #8d96a0; --line: #30363d; --side: #161b22;
    --user: #132b45; --code: #1b222c; --accent: #2f81f7; --accent-fg: #ffffff; --error: #f85149;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html, body { height: 100%; margin: 0; }
body {
  background: var(--bg); color: var(--fg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Hiragino Sans GB",
        "Microsoft YaHei", "Noto Sans CJK SC", sans-serif;
}
button, select, .button, input, textarea {
  font: inherit; color: inherit; background: var(--bg);
  border: 1px solid var(--line); border-radius: 6px;
}
button, select, .button { font-size: 14px; padding: 4px 10px; cursor: pointer; }
button:disabled { opacity: .5; cursor: default; }
:focus-visible { outline: 2px solid var(--accent); outline-offset: -1px; }
.primary { background: var(--accent); color: var(--accent-fg); border-color: var(--accent); }
.offscreen { position: absolute; left: -9999px; width: 1px; height: 1px; opacity: 0; }
#app { display: flex; height: 100%; }
#sidebar {
  width: 250px; flex: none; display: flex; flex-direction: column; gap: 8px; padding: 12px;
  background: var(--side); border-right: 1px solid var(--line);
}
#sidebar h2 { font-size: 12px; font-weight: 600; color: var(--muted); margin: 8px 0 0; }
#conv-list { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
#conv-list li { display: flex; border-radius: 6px; }
#conv-list li.current { background: var(--line); }
#conv-list button { border: 0; background: none; }
.conv-open { flex: 1; min-width: 0; text-align: left; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row { display: flex; gap: 8px; }
main { flex: 1; min-width: 0; display: flex; flex-direction: column; }
header {
  display: flex; flex-wrap: wrap; align-items: center; gap: 12px; padding: 8px 16px;
  border-bottom: 1px solid var(--line);
}
h1 { font-size: 16px; margin: 0 auto 0 0; }
#system-box { padding: 6px 16px; border-bottom: 1px solid var(--line); font-size: 14px; }
#system-box summary { cursor: pointer; color: var(--muted); }
#system { width: 100%; margin-top: 6px; padding: 6px 8px; resize: vertical; }
#messages { flex: 1; overflow-y: auto; padding: 16px; }
.empty { text-align: center; color: var(--muted); }
.msg {
  max-width: 860px; margin: 0 auto 12px; padding: 6px 12px 8px; border-radius: 8px;
  border: 1px solid var(--line);
}
.msg.user { background: var(--user); }
.msg-head { display: flex; justify-content: space-between; align-items: center; font-size: 12px; color: var(--muted); }
.msg-head button { font-size: 12px; padding: 0 8px; }
.body p, .body li, .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.body p, .text { margin: 4px 0; }
.body h3, .body h4, .body h5, .body h6 { font-size: 15px; margin: 10px 0 4px; }
.body ul, .body ol { margin: 4px 0; padding-left: 24px; }
pre { background: var(--code); padding: 8px 10px; border-radius: 6px; overflow-x: auto; margin: 6px 0; }
code { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
:not(pre) > code { background: var(--code); padding: 1px 4px; border-radius: 4px; }
a { color: var(--accent); }
details.reasoning { font-size: 13px; color: var(--muted); margin: 4px 0; }
details.reasoning summary { cursor: pointer; }
.reasoning-text { white-space: pre-wrap; border-left: 3px solid var(--line); padding-left: 8px; }
.error { color: var(--error); }
.note { color: var(--muted); font-style: italic; }
#status { margin: 0; padding: 0 16px; min-height: 1.2em; font-size: 13px; color: var(--muted); }
#status.error { color: var(--error); }
footer { display: flex; gap: 8px; padding: 8px 16px 12px; }
#input { flex: 1; padding: 8px; resize: vertical; min-height: 44px; }
.actions { display: flex; flex-direction: column; gap: 6px; }
#token-box {
  position: fixed; inset: 0; display: flex; align-items: center; justify-content: center;
  background: rgba(0, 0, 0, .45);
}
.dialog {
  background: var(--bg); border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px;
  width: min(420px, 92vw);
}
.dialog h2 { font-size: 17px; margin: 0 0 8px; }
.dialog input { width: 100%; padding: 6px 8px; margin: 8px 0; }
@media (max-width: 720px) {
  #app { flex-direction: column; }
  #sidebar { width: auto; max-height: 30vh; border-right: 0; border-bottom: 1px solid var(--line); }
}
"""

_CHATPAGE_BODY = """<div id="app">
<aside id="sidebar">
  <button id="new-chat" class="primary" data-i18n="newChat"></button>
  <h2 data-i18n="conversations"></h2>
  <ul id="conv-list"></ul>
  <div class="row">
    <button id="export" data-i18n="export"></button>
    <label class="button"><span data-i18n="import"></span>
      <input id="import-file" class="offscreen" type="file" accept=".json,application/json"></label>
  </div>
</aside>
<main>
  <header>
    <h1>@TITLE@</h1>
    <label><span data-i18n="model"></span> <select id="model"></select></label>
  </header>
  <details id="system-box">
    <summary data-i18n="system"></summary>
    <textarea id="system" rows="3" data-i18n-placeholder="systemPlaceholder"></textarea>
  </details>
  <div id="messages"></div>
  <p id="status" role="status" aria-live="polite"></p>
  <footer>
    <textarea id="input" rows="3" data-i18n-placeholder="inputPlaceholder"></textarea>
    <div class="actions">
      <button id="send" class="primary" data-i18n="send"></button>
      <button id="stop" data-i18n="stop" hidden></button>
      <button id="retry" data-i18n="retry"></button>
    </div>
  </footer>
</main>
</div>
<div id="token-box" hidden>
  <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="token-title">
    <h2 id="token-title" data-i18n="tokenTitle"></h2>
    <p data-i18n="tokenHelp"></p>
    <input id="token-input" type="password" autocomplete="off">
    <p id="token-error" class="error"></p>
    <button id="token-ok" class="primary" data-i18n="tokenOk"></button>
  </div>
</div>
<noscript>This page needs JavaScript. / 此页面需要 JavaScript。</noscript>
"""

_CHATPAGE_SCRIPT = r"""
// The openai2 chat page (a module script: strict, and nothing it declares is global).
// Rule one: text from the model or the user reaches the DOM only through textContent,
// createElement and Text nodes, never as HTML (see renderMarkdown).

// openai2.history's archive (what Chat.dump writes and Chat.load reads)
const ARCHIVE_FORMAT = 'openai2.chat';
const ARCHIVE_VERSION = 1;
const STORE_KEY = 'openai2.conversations';  // localStorage: the list of conversations
const CURRENT_KEY = 'openai2.current';      // localStorage: the id of the open one
const MODEL_KEY = 'openai2.model';          // localStorage: the model picked last
const TOKEN_KEY = 'openai2.token';          // sessionStorage: the gateway token (this tab only)

const STRINGS = {
  en: {
    newChat: 'New chat', conversations: 'Conversations', export: 'Export', import: 'Import',
    model: 'Model', system: 'System prompt', systemPlaceholder: 'Optional instructions for the assistant',
    inputPlaceholder: 'Message (Enter to send, Shift+Enter for a new line)',
    send: 'Send', stop: 'Stop', retry: 'Retry', copy: 'Copy', copied: 'Copied', copyFailed: 'Copy failed',
    delete: 'Delete', confirmDelete: 'Delete this conversation?', untitled: 'New conversation',
    you: 'You', assistant: 'Assistant', reasoning: 'Reasoning', stopped: '(stopped)',
    incomplete: '(the answer ended early)', emptyChat: 'Pick a model and write a message below.',
    loadingModels: 'Loading models…', noModels: 'The gateway lists no models.',
    modelsFailed: 'Could not load the models:', noModel: 'Pick a model first.',
    tokenTitle: 'Gateway token', tokenOk: 'Continue', tokenWrong: 'Wrong or missing gateway token.',
    tokenHelp: 'This gateway needs its token (the --token of openai2 serve). It is kept for this tab only.',
    error: 'Error:', badEvent: 'The server sent an event that is not JSON:', importFailed: 'Import failed:',
    imported: 'Imported:', skipped: 'messages left out (not text)', notArchive: 'not an openai2 chat archive',
    badVersion: 'unsupported archive version', storageFull: 'Could not save the conversations (browser storage full?)',
  },
  zh: {
    newChat: '新对话', conversations: '对话列表', export: '导出', import: '导入',
    model: '模型', system: '系统提示', systemPlaceholder: '可选：给助手的指示',
    inputPlaceholder: '输入消息（Enter 发送，Shift+Enter 换行）',
    send: '发送', stop: '停止', retry: '重试', copy: '复制', copied: '已复制', copyFailed: '复制失败',
    delete: '删除', confirmDelete: '删除这个对话？', untitled: '新的对话',
    you: '你', assistant: '助手', reasoning: '推理过程', stopped: '（已停止）',
    incomplete: '（回答提前结束）', emptyChat: '选择模型，然后在下方输入消息。',
    loadingModels: '正在加载模型…', noModels: '网关没有列出任何模型。',
    modelsFailed: '无法加载模型：', noModel: '请先选择模型。',
    tokenTitle: '网关令牌', tokenOk: '继续', tokenWrong: '网关令牌错误或缺失。',
    tokenHelp: '此网关需要令牌（openai2 serve 的 --token），只保存在当前标签页中。',
    error: '错误：', badEvent: '服务器发来的事件不是 JSON：', importFailed: '导入失败：',
    imported: '已导入：', skipped: '条消息未导入（不是文本）', notArchive: '不是 openai2 对话存档',
    badVersion: '不支持的存档版本', storageFull: '无法保存对话（浏览器存储已满？）',
  },
};
const LANG = /^zh\b/i.test(navigator.language || '') ? 'zh' : 'en';
const t = (key) => STRINGS[LANG][key] || STRINGS.en[key] || key;

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

const state = {
  convs: [],        // [{id, title, model, system, messages: [{role, content, reasoning?, error?, stopped?}], updated}]
  current: null,    // the conversation shown
  busy: null,       // the answer being streamed: {conv, msg, controller}
  token: '',        // the gateway token when sessionStorage is unavailable
  deleted: new Set(),  // ids of conversations deleted in this tab (not brought back from storage)
};
const nodes = new WeakMap();  // message -> its element (kept out of the stored objects)

// -- storage
function storageGet(store, key) {
  try { return store.getItem(key); } catch (e) { return null; }
}
function storageSet(store, key, value) {
  try {
    if (value == null) store.removeItem(key);
    else store.setItem(key, value);
    return true;
  } catch (e) {
    return false;  // disabled, or full
  }
}
function loadConvs() {
  const raw = storageGet(localStorage, STORE_KEY);
  if (!raw) return [];
  try {
    const list = JSON.parse(raw);
    if (Array.isArray(list)) return list.filter((c) => c && typeof c.id === 'string' && Array.isArray(c.messages));
  } catch (e) { /* fall through: keep the unreadable text aside rather than overwrite it */ }
  storageSet(localStorage, STORE_KEY + '.unreadable', raw);
  return [];
}
// Another tab may have saved conversations since this one read the list: keep those (unless
// deleted here), newest first.  The same conversation changed in two tabs: the last save wins.
function mergeStored() {
  const known = new Set(state.convs.map((c) => c.id));
  for (const c of loadConvs()) if (!known.has(c.id) && !state.deleted.has(c.id)) state.convs.push(c);
  state.convs.sort((a, b) => (b.updated || 0) - (a.updated || 0));
}
function saveConvs() {
  mergeStored();
  const kept = state.convs.filter((c) => c.messages.length || c.system);
  const ok = storageSet(localStorage, STORE_KEY, JSON.stringify(kept))
    && storageSet(localStorage, CURRENT_KEY, state.current ? state.current.id : null);
  if (!ok) setStatus(t('storageFull'), true);
}
function newConv() {
  return {id: Date.now().toString(36) + Math.random().toString(36).slice(2, 8), title: '',
          model: $('model').value, system: '', messages: [], updated: Date.now()};
}
function token() { return storageGet(sessionStorage, TOKEN_KEY) || state.token; }
function headers(json) {
  const h = json ? {'Content-Type': 'application/json'} : {};
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

// -- status line and token dialog
function setStatus(text, isError) {
  const s = $('status');
  s.textContent = text || '';
  s.classList.toggle('error', !!isError);
}
function askToken(wrong) {
  storageSet(sessionStorage, TOKEN_KEY, null);
  state.token = '';
  $('token-error').textContent = wrong ? t('tokenWrong') : '';
  $('token-box').hidden = false;
  $('app').inert = true;  // a modal: the page behind takes no clicks or keys
  $('token-input').focus();
}
function saveToken() {
  const value = $('token-input').value.trim();
  if (!value) return;
  if (!storageSet(sessionStorage, TOKEN_KEY, value)) state.token = value;
  $('token-input').value = '';
  $('token-box').hidden = true;
  $('app').inert = false;
  $('input').focus();
  loadModels();
}

// -- the server's errors
function errorText(body) {
  const e = body && body.error !== undefined ? body.error : body;
  if (typeof e === 'string') return e;
  if (e && typeof e.message === 'string') return e.message;
  return JSON.stringify(e).slice(0, 300);
}
async function httpError(res) {
  let text = '';
  try { text = await res.text(); } catch (e) { /* the status says enough */ }
  let message;
  try { message = errorText(JSON.parse(text)); } catch (e) { message = text.slice(0, 300); }
  return 'HTTP ' + res.status + (message ? ': ' + message : '');
}

// -- models
async function loadModels() {
  setStatus(t('loadingModels'));
  try {
    const res = await fetch('v1/models', {headers: headers(false)});
    if (res.status === 401) { setStatus(t('tokenWrong'), true); askToken(!!token()); return; }
    if (!res.ok) throw new Error(await httpError(res));
    const body = await res.json();
    const ids = (Array.isArray(body.data) ? body.data : []).map((m) => m && m.id)
      .filter((id) => typeof id === 'string').sort();
    const select = $('model');
    select.replaceChildren(...ids.map((id) => el('option', null, id)));
    const wanted = (state.current && state.current.model) || storageGet(localStorage, MODEL_KEY);
    if (ids.includes(wanted)) select.value = wanted;
    setStatus(ids.length ? '' : t('noModels'), !ids.length);
  } catch (e) {
    setStatus(t('modelsFailed') + ' ' + e.message, true);
  }
}

// -- the small, safe Markdown subset
// Fenced code blocks, `inline code`, **bold**, *emphasis*, lists, # headings and
// [links](URL).  Everything is built from elements and Text nodes: no HTML parsing.
// Every part of INLINE stops at the next character that could start another match (a link's
// label holds no "["), so a hostile answer ("[[[[..." or "****...") costs linear time, never
// quadratic: a 200 kB answer of "[" froze the tab for minutes.
const LIST_ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
const INLINE = /`([^`\n]+)`|\*\*(?!\s)([^*]+?)\*\*|\*(?![\s*])([^*\n]*?[^\s*])\*|\[([^[\]\n]+)\]\(([^()\s]+)\)/g;

function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text || '').split('\n');
  let para = [];
  const flush = () => {
    if (para.length) out.append(inline(el('p'), para.join('\n')));
    para = [];
  };
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    const fence = /^\s*(`{3,}|~{3,})\s*([^`\s]*)/.exec(line);
    if (fence) {
      flush();
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) code.push(lines[i]);
      i++;  // the closing fence (an unclosed block runs to the end, as while it streams in)
      const block = el('code', null, code.join('\n'));
      if (fence[2]) block.dataset.lang = fence[2];
      const pre = el('pre');
      pre.append(block);
      out.append(pre);
      continue;
    }
    let item = LIST_ITEM.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? 'ol' : 'ul');
      if (ordered && parseInt(item[1], 10) !== 1) list.start = parseInt(item[1], 10);
      while (item && /\d/.test(item[1]) === ordered) {
        list.append(inline(el('li'), item[2]));
        item = ++i < lines.length ? LIST_ITEM.exec(lines[i]) : null;
      }
      out.append(list);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      out.append(inline(el('h' + Math.min(6, heading[1].length + 2)), heading[2]));
    } else if (line.trim()) {
      para.push(line);
    } else {
      flush();
    }
    i++;
  }
  flush();
  return out;
}

function inline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    parent.append(text.slice(last, m.index));  // a string becomes a Text node
    if (m[1] != null) parent.append(el('code', null, m[1]));
    else if (m[2] != null) parent.append(inline(el('strong'), m[2]));
    else if (m[3] != null) parent.append(inline(el('em'), m[3]));
    else parent.append(link(m[4], m[5], m[0]));
    last = m.index + m[0].length;
  }
  parent.append(text.slice(last));
  return parent;
}

// Only absolute http(s) and mailto links; anything else (javascript:, data:, relative) stays text.
function link(label, href, raw) {
  let url = null;
  if (/^(https?:\/\/|mailto:)/i.test(href)) {
    try { url = new URL(href); } catch (e) { url = null; }
  }
  if (!url || !['http:', 'https:', 'mailto:'].includes(url.protocol)) return document.createTextNode(raw);
  const a = el('a', null, label);
  a.href = url.href;
  a.rel = 'noopener noreferrer';
  a.target = '_blank';
  return a;
}

// -- drawing
function renderList() {
  const items = state.convs.filter((c) => c.messages.length || c === state.current).map((c) => {
    const li = el('li', c === state.current ? 'current' : '');
    const open = el('button', 'conv-open', c.title || t('untitled'));
    open.title = c.title || '';
    open.addEventListener('click', () => switchTo(c));
    const del = el('button', 'conv-del', '×');
    del.title = t('delete');
    del.setAttribute('aria-label', t('delete'));
    del.addEventListener('click', () => deleteConv(c));
    li.append(open, del);
    return li;
  });
  $('conv-list').replaceChildren(...items);
}

function renderConv() {
  const conv = state.current;
  const box = $('messages');
  box.replaceChildren(...conv.messages.map(messageNode));
  if (!conv.messages.length) box.append(el('p', 'empty', t('emptyChat')));
  $('system').value = conv.system || '';
  if (conv.system) $('system-box').open = true;
  if (conv.model && [...$('model').options].some((o) => o.value === conv.model)) $('model').value = conv.model;
  box.scrollTop = box.scrollHeight;
}

function messageNode(msg) {
  const node = el('div', 'msg ' + msg.role);
  const head = el('div', 'msg-head');
  const copy = el('button', 'copy', t('copy'));
  copy.addEventListener('click', () => copyText(msg.content, copy));
  head.append(el('span', 'who', msg.role === 'user' ? t('you') : t('assistant')), copy);
  node.append(head, el('div', 'body'));
  nodes.set(msg, node);
  fillMessage(node, msg);
  return node;
}

function fillMessage(node, msg) {
  if (msg.reasoning) {
    let details = node.querySelector('details.reasoning');
    if (!details) {  // made once, so an open one stays open while the answer streams in
      details = el('details', 'reasoning');
      details.append(el('summary', null, t('reasoning')), el('div', 'reasoning-text'));
      node.insertBefore(details, node.querySelector('.body'));
    }
    details.lastChild.textContent = msg.reasoning;
  }
  const body = node.querySelector('.body');
  body.replaceChildren(msg.role === 'assistant' ? renderMarkdown(msg.content) : el('div', 'text', msg.content));
  if (msg.stopped) body.append(el('p', 'note', t('stopped')));
  if (msg.incomplete) body.append(el('p', 'note', t('incomplete')));
  if (msg.error) body.append(el('p', 'error', t('error') + ' ' + msg.error));
}

let pending = false;
function redraw(conv, msg, now) {
  if (conv !== state.current || !nodes.has(msg)) return;
  const draw = () => {
    pending = false;
    const box = $('messages');
    const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillMessage(nodes.get(msg), msg);
    if (atEnd) box.scrollTop = box.scrollHeight;
  };
  if (now) draw();
  else if (!pending) { pending = true; requestAnimationFrame(draw); }
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('retry').disabled = busy;
  $('stop').hidden = !busy;
}

// -- talking to the gateway
// Server-sent events by hand (the WHATWG rules chat streams need): lines end in CR, LF or CRLF
// (a CR at the end of a piece may be half a CRLF: held back); a blank line ends an event;
// "data:" lines are joined with "\n"; lines starting with ":" are comments.
function sseParser(onEvent) {
  let rest = '', data = [], type = '';
  return (piece) => {
    let text = rest + piece;
    const heldCR = text.endsWith('\r');
    if (heldCR) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    rest = lines.pop() + (heldCR ? '\r' : '');
    for (const line of lines) {
      if (!line) {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        data = [];
        type = '';
        continue;
      }
      if (line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') type = value;
    }
  };
}

function wireMessages(conv) {
  const out = conv.system && conv.system.trim() ? [{role: 'system', content: conv.system}] : [];
  for (const m of conv.messages) {
    if (m.role === 'user' || m.content) out.push({role: m.role, content: m.content});
  }
  return out;
}

// Merge one chat.completion.chunk (or a whole chat.completion) into msg; true at a finish_reason.
function merge(msg, obj) {
  const choice = obj && Array.isArray(obj.choices) ? obj.choices[0] : null;
  if (!choice) return false;
  const d = choice.delta || choice.message || {};
  const reasoning = typeof d.reasoning_content === 'string' ? d.reasoning_content : d.reasoning;
  if (typeof reasoning === 'string') msg.reasoning = (msg.reasoning || '') + reasoning;
  if (typeof d.content === 'string') msg.content += d.content;
  return !!choice.finish_reason;
}

async function streamInto(msg, payload, signal, update) {
  const res = await fetch('v1/chat/completions', {
    method: 'POST', headers: headers(true), body: JSON.stringify(payload), signal,
  });
  if (res.status === 401) { askToken(true); throw new Error(t('tokenWrong')); }
  if (!res.ok) throw new Error(await httpError(res));
  if (!(res.headers.get('content-type') || '').includes('event-stream')) {  // a server that answered whole
    merge(msg, await res.json());
    return;
  }
  let done = false, finished = false;
  const feed = sseParser((type, data) => {
    if (data === '[DONE]') { done = true; return; }
    let obj;
    try { obj = JSON.parse(data); } catch (e) { throw new Error(t('badEvent') + ' ' + data.slice(0, 200)); }
    if (type === 'error' || (obj && obj.error)) throw new Error(errorText(obj));
    finished = merge(msg, obj) || finished;
    update();
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();  // streaming UTF-8: a character split between pieces is kept whole
  try {
    while (!done) {
      const {value, done: end} = await reader.read();
      if (end) break;
      feed(decoder.decode(value, {stream: true}));
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (!done && !finished) msg.incomplete = true;
}

async function ask(conv) {
  conv.model = $('model').value;
  conv.system = $('system').value;
  const payload = {model: conv.model, messages: wireMessages(conv), stream: true};
  const msg = {role: 'assistant', content: ''};
  conv.messages.push(msg);
  conv.updated = Date.now();  // to the top of the list (saveConvs sorts)
  const controller = new AbortController();
  state.busy = {conv, msg, controller};
  setBusy(true);
  saveConvs();
  renderList();
  if (conv === state.current) renderConv();
  try {
    await streamInto(msg, payload, controller.signal, () => redraw(conv, msg));
  } catch (e) {
    if (e.name === 'AbortError') msg.stopped = true;
    else msg.error = e.message || String(e);
  } finally {
    state.busy = null;
    setBusy(false);
    saveConvs();
    redraw(conv, msg, true);
  }
}

function send() {
  const text = $('input').value;
  if (state.busy || !text.trim()) return;
  if (!$('model').value) { setStatus(t('noModel'), true); return; }
  const conv = state.current;
  conv.messages.push({role: 'user', content: text});
  if (!conv.title) conv.title = text.trim().replace(/\s+/g, ' ').slice(0, 60);
  $('input').value = '';
  ask(conv);
}

// Resend the last user message: the answers after it are dropped.
function retry() {
  const conv = state.current;
  if (state.busy || !conv.messages.some((m) => m.role === 'user')) return;
  while (conv.messages[conv.messages.length - 1].role !== 'user') conv.messages.pop();
  ask(conv);
}

function stop() {
  if (state.busy) state.busy.controller.abort();
}

// -- conversations
function switchTo(conv) {
  state.current = conv;
  saveConvs();
  renderList();
  renderConv();
}

function startNew() {
  if (!state.current || state.current.messages.length) {
    const conv = newConv();
    state.convs.unshift(conv);
    switchTo(conv);
  }
  $('input').focus();
}

function deleteConv(conv) {
  if (!confirm(t('confirmDelete'))) return;
  if (state.busy && state.busy.conv === conv) state.busy.controller.abort();
  state.convs = state.convs.filter((c) => c !== conv);
  state.deleted.add(conv.id);
  if (conv === state.current) {
    state.current = state.convs[0] || newConv();
    if (!state.convs.length) state.convs.push(state.current);
  }
  saveConvs();
  renderList();
  renderConv();
}

async function copyText(text, button) {
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); ok = true; }
  } catch (e) { /* denied or unfocused: the fallback below */ }
  if (!ok) {
    const area = el('textarea', 'offscreen');
    area.value = text;
    document.body.append(area);
    area.select();
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    area.remove();
  }
  button.textContent = ok ? t('copied') : t('copyFailed');
  setTimeout(() => { button.textContent = t('copy'); }, 1500);
}

// -- export / import (the Chat.dump archive)
function toArchive(conv) {
  const messages = wireMessages(conv);
  return {format: ARCHIVE_FORMAT, version: ARCHIVE_VERSION, messages,
          pinned: messages.length && messages[0].role === 'system' ? [0] : []};
}

function exportConv() {
  const conv = state.current;
  const text = JSON.stringify(toArchive(conv), null, 2) + '\n';
  const a = el('a');
  a.href = URL.createObjectURL(new Blob([text], {type: 'application/json'}));
  const stamp = new Date(conv.updated).toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
  a.download = 'openai2-chat-' + stamp + '.json';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

function messageText(m) {
  if (typeof m.content === 'string') return m.content;
  if (!Array.isArray(m.content)) return null;
  const parts = m.content.filter((p) => p && p.type === 'text' && typeof p.text === 'string');
  return parts.length ? parts.map((p) => p.text).join('\n') : null;
}

// An archive (or a plain JSON list of messages) -> a new conversation; [conv, left out].
function fromArchive(data) {
  let list = data;
  if (!Array.isArray(data)) {
    if (!data || data.format !== ARCHIVE_FORMAT) throw new Error(t('notArchive'));
    if (data.version !== ARCHIVE_VERSION) throw new Error(t('badVersion') + ' ' + data.version);
    list = data.messages;
  }
  if (!Array.isArray(list)) throw new Error(t('notArchive'));
  const conv = newConv();
  let skipped = 0;
  list.forEach((m, i) => {
    const text = m ? messageText(m) : null;
    if (text === null) skipped++;
    else if (m.role === 'system' && i === 0) conv.system = text;
    else if (m.role === 'user' || m.role === 'assistant') conv.messages.push({role: m.role, content: text});
    else skipped++;
  });
  const first = conv.messages.find((m) => m.role === 'user');
  conv.title = first ? first.content.trim().replace(/\s+/g, ' ').slice(0, 60) : '';
  return [conv, skipped];
}

async function importFile(file) {
  try {
    const [conv, skipped] = fromArchive(JSON.parse(await file.text()));
    if (!conv.title) conv.title = file.name;
    state.convs.unshift(conv);
    switchTo(conv);
    setStatus(t('imported') + ' ' + file.name + (skipped ? ' (' + skipped + ' ' + t('skipped') + ')' : ''));
  } catch (e) {
    setStatus(t('importFailed') + ' ' + file.name + ': ' + e.message, true);
  } finally {
    $('import-file').value = '';
  }
}

// -- start
function applyStrings() {
  document.documentElement.lang = LANG === 'zh' ? 'zh-CN' : 'en';
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll('[data-i18n-placeholder]')) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
}

function start() {
  applyStrings();
  state.convs = loadConvs();
  const currentId = storageGet(localStorage, CURRENT_KEY);
  state.current = state.convs.find((c) => c.id === currentId) || state.convs[0];
  if (!state.current) { state.current = newConv(); state.convs.push(state.current); }
  renderList();
  renderConv();

  $('input').addEventListener('keydown', (e) => {
    // Enter sends and Shift+Enter is a new line -- but never while an input method is composing
    // (Chinese, Japanese: there Enter picks the candidate).  keyCode 229 is the composition's
    // own key in browsers that end the composition before this event.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  $('send').addEventListener('click', send);
  $('stop').addEventListener('click', stop);
  $('retry').addEventListener('click', retry);
  $('new-chat').addEventListener('click', startNew);
  $('export').addEventListener('click', exportConv);
  $('import-file').addEventListener('change', (e) => { if (e.target.files[0]) importFile(e.target.files[0]); });
  $('model').addEventListener('change', () => {
    storageSet(localStorage, MODEL_KEY, $('model').value);
    state.current.model = $('model').value;
  });
  $('system').addEventListener('change', () => { state.current.system = $('system').value; saveConvs(); });
  $('token-ok').addEventListener('click', saveToken);
  $('token-input').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.isComposing) return;
    e.preventDefault();  // or this Enter would also reach the message box, which gets the focus
    saveToken();
  });

  window.addEventListener('storage', (e) => { if (e.key === STORE_KEY) { mergeStored(); renderList(); } });

  $('input').focus();
  if (document.documentElement.dataset.token === 'required' && !token()) askToken(false);
  else loadModels();
}

start();
"""


_CHATPAGE_CACHE: dict[tuple[bool, str], bytes] = {}


def _chatpage_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def chat_page(*, token_required: bool = False, title: str = "openai2") -> bytes:
    """The chat page as one UTF-8 HTML document (built on the first call, then cached).

    Send it as ``text/html; charset=utf-8`` with ``Content-Security-Policy:`` :data:`CHAT_PAGE_CSP`
    (the script and style are the same in every variant, so one policy fits all).

    :param token_required: the gateway wants a token: the page asks for it once before its
        first request, keeps it in the tab's ``sessionStorage`` and sends it as
        ``Authorization: Bearer``.  (Without it the page still asks when a request gets 401.)
    :param title: the page's title and heading (escaped: any text is safe)
    :returns: the document's bytes
    """
    key = (bool(token_required), str(title))
    page = _CHATPAGE_CACHE.get(key)
    if page is None:
        page = (
            '<!DOCTYPE html>\n<html lang="en" data-token="%s">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="color-scheme" content="light dark">\n'
            '<meta name="referrer" content="no-referrer">\n'
            '<link rel="icon" href="data:,">\n'
            "<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n%s"
            '<script type="module">%s</script>\n</body>\n</html>\n'
            % (
                "required" if token_required else "optional",
                _chatpage_escape(key[1]),
                _CHATPAGE_STYLE,
                _CHATPAGE_BODY.replace("@TITLE@", _chatpage_escape(key[1])),
                _CHATPAGE_SCRIPT,
            )
        ).encode("utf-8")
        if len(_CHATPAGE_CACHE) < 16:  # a handful of variants at most; never grows without bound
            _CHATPAGE_CACHE[key] = page
    return page
