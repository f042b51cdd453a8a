// m2n2 serve: the annotation page. Plain JavaScript, no build step; every pixel
// computation happens in the server's engine, the page only draws what it returns.
'use strict';

const COLORS = ['#2a62d6', '#e0762b', '#2f9e5b', '#b03fc4', '#c9a400', '#1aa3b0', '#d13b3b', '#6b4fd8'];
const $ = (id) => document.getElementById(id);
const view = $('view');
const ctx = view.getContext('2d');

const state = {
  images: [],      // [{name, saved, state}]
  index: -1,
  name: null,      // current image name
  img: null,       // its HTMLImageElement
  width: 0, height: 0,
  perImage: new Map(),  // name -> {objects, selected, undo} (unsaved work survives navigation)
  prep: {state: 'idle'},
  showSoft: false,
  cursor: null,    // image pixel under the mouse (for I / O)
  selectedClick: -1,
  segments: 0,     // masks drawn (tests wait on it)
};

// ------------------------------------------------------------------ API
// The token comes in the page's URL (?token=..., as the server prints it); it is taken
// out of the address bar and history at once and sent on every call of the API.
const TOKEN = (() => {
  const url = new URL(window.location.href);
  const t = url.searchParams.get('token') || sessionStorage.getItem('m2n2-token') || '';
  if (url.searchParams.has('token')) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  if (t) sessionStorage.setItem('m2n2-token', t);
  return t;
})();

function authorized(init) {
  return {...init, headers: {...(init.headers || {}), 'Authorization': 'Bearer ' + TOKEN}};
}

async function api(path, body) {
  const init = body === undefined ? {} : {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)};
  const res = await fetch(path, authorized(init));
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error) || `${path}: HTTP ${res.status}`);
  return data;
}

function message(text, isError) {
  const m = $('message');
  m.textContent = text;
  m.classList.toggle('error', !!isError);
}

// ------------------------------------------------------------------ objects
function current() { return state.perImage.get(state.name); }
function selectedObject() { const c = current(); return c ? c.objects[c.selected] : null; }

function newObject(c, id, clicks, saved) {
  const used = new Set(c.objects.map((o) => o.id));
  let n = c.objects.length + 1;
  while (!id && used.has(String(n))) n++;
  const o = {id: id || String(n), clicks: clicks || [], color: COLORS[c.objects.length % COLORS.length],
             mask: null, soft: null, area: 0, saved: !!saved, inflight: false, again: false};
  c.objects.push(o);
  return o;
}

function pushUndo(c, o) { c.undo.push({object: o, clicks: o.clicks.slice()}); }

function addClick(x, y, positive) {
  const c = current();
  if (!c) return;
  let o = selectedObject();
  if (!o) { o = newObject(c); c.selected = c.objects.length - 1; }
  x = Math.max(0, Math.min(state.width - 1, Math.floor(x)));
  y = Math.max(0, Math.min(state.height - 1, Math.floor(y)));
  const same = o.clicks.findIndex((k) => k.x === x && k.y === y);
  if (same >= 0 && o.clicks[same].positive === positive) return;  // a double click adds nothing
  pushUndo(c, o);
  if (same >= 0) o.clicks.splice(same, 1);  // the other label on the same pixel replaces it
  o.clicks.push({x, y, positive});
  o.saved = false;
  state.selectedClick = o.clicks.length - 1;
  refreshPanels();
  draw();
  segment(o);
  markovMap();
}

function undo() {
  const c = current();
  if (!c || !c.undo.length) return;
  if (c.undo[c.undo.length - 1].deleted) { undoDelete(c); return; }
  const {object, clicks} = c.undo.pop();
  object.clicks = clicks;
  object.saved = false;
  const i = c.objects.indexOf(object);
  if (i >= 0) c.selected = i;
  state.selectedClick = object.clicks.length - 1;
  refreshPanels();
  segment(object);
  markovMap();
  draw();
}

async function undoDelete(c) {
  const {deleted: o, index, onDisk} = c.undo.pop();
  c.objects.splice(Math.min(index, c.objects.length), 0, o);
  c.selected = c.objects.indexOf(o);
  state.selectedClick = o.clicks.length - 1;
  refreshPanels();
  draw();
  // The mask on disk comes back as it was saved (the page keeps any later, unsaved clicks).
  if (onDisk && o.savedClicks && o.savedClicks.length) {
    try {
      await api('/api/save', {image: state.name, objects: [{id: o.id, clicks: o.savedClicks}]});
      message(`${o.id} restored and saved again`);
      document.body.dataset.restores = String(Number(document.body.dataset.restores || 0) + 1);
      refreshImageList(false);
    } catch (e) {
      o.saved = false;
      message('restore failed: ' + e.message, true);
    }
  }
  refreshPanels();
}

function reset() {
  const o = selectedObject();
  if (!o || !o.clicks.length) return;
  pushUndo(current(), o);
  o.clicks = [];
  o.saved = false;
  state.selectedClick = -1;
  refreshPanels();
  segment(o);
  markovMap();
  draw();
}

// ------------------------------------------------------------------ segmentation
// One request per object at a time; clicks made meanwhile (or while the image is being
// prepared) are sent together once the answer is back: nothing is lost, nothing waits twice.
async function segment(o) {
  const name = state.name;
  if (!o.clicks.length) { o.mask = o.soft = null; o.area = 0; draw(); return; }
  if (o.inflight) { o.again = true; return; }
  o.inflight = true;
  const clicks = o.clicks.slice();
  try {
    const r = await api('/api/segment', {image: name, clicks, soft: state.showSoft});
    if (name !== state.name) return;
    o.mask = await tintedMask(r.mask_png, o.color);
    o.soft = r.soft_png ? await loadImage('data:image/png;base64,' + r.soft_png) : null;
    o.area = r.area;
    state.segments++;
    view.dataset.segments = String(state.segments);
    message(`${o.id}: ${r.area} px from ${clicks.length} click${clicks.length > 1 ? 's' : ''} (${r.ms_segment.toFixed(0)} ms)`);
    draw();
    refreshPanels();
  } catch (e) {
    message(e.message, true);
  } finally {
    o.inflight = false;
    if (o.again) { o.again = false; if (name === state.name) segment(o); }
  }
}

// An image of the API: fetched with the token, shown from a blob URL.
async function loadApiImage(path) {
  const res = await fetch(path, authorized({}));
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    throw new Error((data && data.error) || `${path}: HTTP ${res.status}`);
  }
  const url = URL.createObjectURL(await res.blob());
  try { return await loadImage(url); } finally { URL.revokeObjectURL(url); }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error('cannot decode an image from the server'));
    im.src = src;
  });
}

// The 0/255 mask PNG as a canvas: the object's colour inside, a solid outline.
async function tintedMask(png, color) {
  const im = await loadImage('data:image/png;base64,' + png);
  const c = document.createElement('canvas');
  c.width = im.width; c.height = im.height;
  const g = c.getContext('2d');
  g.drawImage(im, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height);
  const w = c.width, h = c.height, p = d.data;
  const rgb = [1, 3, 5].map((i) => parseInt(color.substr(i, 2), 16));
  const inside = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) inside[i] = p[4 * i] > 127 ? 1 : 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      let alpha = 0;
      if (inside[i]) {
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
                     !inside[i - 1] || !inside[i + 1] || !inside[i - w] || !inside[i + w];
        alpha = edge ? 255 : 110;
      }
      p[4 * i] = rgb[0]; p[4 * i + 1] = rgb[1]; p[4 * i + 2] = rgb[2]; p[4 * i + 3] = alpha;
    }
  }
  g.putImageData(d, 0, 0);
  return c;
}

async function markovMap() {
  const o = selectedObject();
  const mc = $('markov');
  const g = mc.getContext('2d');
  const k = o && o.clicks[state.selectedClick];
  if (!k) { g.clearRect(0, 0, mc.width, mc.height); $('markov-caption').textContent = ''; return; }
  const name = state.name;
  try {
    const r = await api('/api/markov-map', {image: name, x: k.x, y: k.y});
    if (name !== state.name) return;
    const im = await loadImage('data:image/png;base64,' + r.png);
    mc.width = r.grid[0]; mc.height = r.grid[1];
    g.imageSmoothingEnabled = false;
    g.drawImage(im, 0, 0);
    $('markov-caption').textContent = `(${k.x}, ${k.y}) · ${r.min_steps.toFixed(0)}–${r.max_steps.toFixed(0)} steps`;
    mc.dataset.maps = String(Number(mc.dataset.maps) + 1);
  } catch (e) {
    message(e.message, true);
  }
}

// ------------------------------------------------------------------ drawing
// The canvas keeps the image's pixels; CSS scales it to fill the stage (up or down).
function fitCanvas() {
  if (!state.width) return;
  const stage = $('stage');
  const w = stage.clientWidth - 24, h = stage.clientHeight - 24;
  const s = Math.min(w / state.width, h / state.height);
  view.style.width = `${Math.floor(state.width * s)}px`;
  view.style.height = `${Math.floor(state.height * s)}px`;
}
window.addEventListener('resize', fitCanvas);

function draw() {
  if (!state.img) { ctx.clearRect(0, 0, view.width, view.height); return; }
  ctx.drawImage(state.img, 0, 0);
  const c = current();
  const sel = selectedObject();
  if (state.showSoft && sel && sel.soft) {
    ctx.globalAlpha = 0.55;
    ctx.drawImage(sel.soft, 0, 0, state.width, state.height);
    ctx.globalAlpha = 1;
  }
  for (const o of c.objects) {
    if (!o.mask) continue;
    ctx.globalAlpha = o === sel ? 1 : 0.6;
    ctx.drawImage(o.mask, 0, 0);
  }
  ctx.globalAlpha = 1;
  const r = Math.max(4, Math.round(Math.max(state.width, state.height) / 160));
  for (const o of c.objects) {
    o.clicks.forEach((k, i) => {
      ctx.beginPath();
      ctx.arc(k.x + 0.5, k.y + 0.5, r, 0, 2 * Math.PI);
      ctx.fillStyle = k.positive ? '#1f9d55' : '#d13b3b';
      ctx.fill();
      ctx.lineWidth = Math.max(1.5, r / 3);
      ctx.strokeStyle = o === sel && i === state.selectedClick ? '#ffd400' : '#fff';
      ctx.stroke();
    });
  }
}

function refreshPanels() {
  const c = current();
  const ol = $('object-list');
  ol.textContent = '';
  if (!c) return;
  c.objects.forEach((o, i) => {
    const li = document.createElement('li');
    li.className = i === c.selected ? 'selected' : '';
    li.innerHTML = `<span class="swatch"></span><input spellcheck="false"><span class="count"></span><span class="saved"></span><button class="del" title="Delete object">✕</button>`;
    li.querySelector('.swatch').style.background = o.color;
    const input = li.querySelector('input');
    input.value = o.id;
    input.addEventListener('change', () => renameObject(o, input.value.trim(), input));
    input.addEventListener('focus', () => selectObject(i));
    li.querySelector('.count').textContent = `${o.clicks.length} cl.`;
    li.querySelector('.saved').textContent = o.saved ? 'saved' : '';
    li.querySelector('.del').addEventListener('click', (e) => { e.stopPropagation(); deleteObject(o); });
    li.addEventListener('click', () => selectObject(i));
    ol.appendChild(li);
  });
  const cl = $('click-list');
  cl.textContent = '';
  const o = selectedObject();
  if (!o) return;
  o.clicks.forEach((k, i) => {
    const li = document.createElement('li');
    li.className = (k.positive ? 'pos' : 'neg') + (i === state.selectedClick ? ' selected' : '');
    li.textContent = `${k.positive ? '+' : '−'} (${k.x}, ${k.y})`;
    li.addEventListener('click', () => { state.selectedClick = i; refreshPanels(); draw(); markovMap(); });
    cl.appendChild(li);
  });
}

function selectObject(i) {
  const c = current();
  if (!c || i < 0 || i >= c.objects.length || i === c.selected) return;
  c.selected = i;
  state.selectedClick = c.objects[i].clicks.length - 1;
  refreshPanels();
  draw();
  markovMap();
}

function renameObject(o, id, input) {
  const c = current();
  if (!id || /[\/\\]/.test(id) || c.objects.some((x) => x !== o && x.id === id)) {
    message(`"${id}": object names must be unique and must not contain / or \\`, true);
    input.value = o.id;
    return;
  }
  o.id = id;
  o.saved = false;
  refreshPanels();
}

async function deleteObject(o) {
  const c = current();
  const name = state.name;
  const onDisk = o.saved || o.wasSaved;
  if (onDisk) {
    try { await api('/api/delete', {image: name, id: o.id}); } catch (e) { /* not saved under this name */ }
  }
  const index = c.objects.indexOf(o);
  c.objects.splice(index, 1);
  // Undo brings the object back, and its saved mask with it.
  c.undo.push({deleted: o, index, onDisk});
  message(`deleted ${o.id} (U or Ctrl-Z brings it back)`);
  c.selected = Math.min(c.selected, c.objects.length - 1);
  const sel = selectedObject();
  state.selectedClick = sel ? sel.clicks.length - 1 : -1;
  refreshPanels();
  draw();
  markovMap();
}

async function save() {
  const c = current();
  if (!c) return;
  const objects = c.objects.filter((o) => o.clicks.length).map((o) => ({id: o.id, clicks: o.clicks}));
  if (!objects.length) { message('nothing to save: no object has clicks', true); return; }
  try {
    const r = await api('/api/save', {image: state.name, objects});
    for (const o of c.objects) if (o.clicks.length) { o.saved = true; o.wasSaved = true; o.savedClicks = o.clicks.slice(); }
    document.body.dataset.saves = String(Number(document.body.dataset.saves || 0) + 1);
    message(`saved ${r.saved.length} mask${r.saved.length > 1 ? 's' : ''}: ${r.saved.map((s) => s.mask).join(', ')} · clicks in ${r.click_file}`);
    refreshPanels();
    refreshImageList(false);
  } catch (e) {
    message('save failed: ' + e.message, true);
  }
}

// ------------------------------------------------------------------ images
async function refreshImageList(rebuild) {
  const r = await api('/api/images');
  state.images = r.images;
  $('image-count').textContent = `${r.images.length} images`;
  const ul = $('image-list');
  if (rebuild) {
    ul.textContent = '';
    r.images.forEach((im, i) => {
      const li = document.createElement('li');
      li.innerHTML = `<img loading="lazy" alt=""><span class="name"></span><span class="badge"></span>`;
      const thumb = li.querySelector('img');
      fetch('/api/thumb?name=' + encodeURIComponent(im.name), authorized({}))
        .then((res) => (res.ok ? res.blob() : null))
        .then((blob) => { if (blob) thumb.src = URL.createObjectURL(blob); })
        .catch(() => { /* the list works without its thumbnail */ });
      li.querySelector('.name').textContent = im.name;
      li.title = im.name;
      li.addEventListener('click', () => openImage(i));
      ul.appendChild(li);
    });
  }
  [...ul.children].forEach((li, i) => {
    const im = r.images[i];
    if (!im) return;
    li.classList.toggle('current', i === state.index);
    li.querySelector('.badge').textContent = im.saved ? String(im.saved) : '';
    li.querySelector('.badge').style.display = im.saved ? '' : 'none';
  });
}

async function openImage(i) {
  if (i < 0 || i >= state.images.length) return;
  const name = state.images[i].name;
  state.index = i;
  state.name = name;
  state.selectedClick = -1;
  $('image-name').textContent = name;
  [...$('image-list').children].forEach((li, j) => li.classList.toggle('current', j === i));
  $('image-list').children[i].scrollIntoView({block: 'nearest'});
  api('/api/prepare', {image: name}).catch((e) => message(e.message, true));
  watchPreparation(name);
  const img = await loadApiImage('/api/image?name=' + encodeURIComponent(name));
  if (state.name !== name) return;
  state.img = img;
  state.width = img.naturalWidth;
  state.height = img.naturalHeight;
  view.width = state.width;
  view.height = state.height;
  fitCanvas();
  if (!state.perImage.has(name)) {
    const c = {objects: [], selected: 0, undo: []};
    state.perImage.set(name, c);
    const saved = await api('/api/annotations?image=' + encodeURIComponent(name));
    for (const s of saved.objects) {
      const o = newObject(c, s.id, s.clicks, true);
      o.wasSaved = true;
      o.savedClicks = s.clicks.slice();
    }
    if (!c.objects.length) newObject(c);
    c.objects.forEach((o) => segment(o));
  }
  const sel = selectedObject();
  state.selectedClick = sel ? sel.clicks.length - 1 : -1;
  refreshPanels();
  draw();
  markovMap();
}

// Polls the preparation (attention, operator, table) of an image while it is shown.
async function watchPreparation(name) {
  const box = $('prep');
  while (state.name === name) {
    let s;
    try { s = await api('/api/status?image=' + encodeURIComponent(name)); } catch (e) { message(e.message, true); return; }
    if (state.name !== name) return;
    const queued = current() ? current().objects.reduce((n, o) => n + (o.inflight ? 1 : 0), 0) : 0;
    if (s.state === 'ready') {
      box.classList.remove('busy');
      $('prep-text').textContent = `ready · prepared in ${(s.seconds.attention + s.seconds.operator + s.seconds.table).toFixed(1)} s`;
      return;
    }
    if (s.state === 'failed') {
      box.classList.remove('busy');
      $('prep-text').textContent = 'failed';
      message(s.error, true);
      return;
    }
    box.classList.add('busy');
    const stage = s.state === 'queued' ? 'queued' : `preparing: ${s.stage || '…'}`;
    $('prep-text').textContent = stage + (queued ? ` · ${queued} request${queued > 1 ? 's' : ''} waiting` : '');
    $('prep-fill').style.width = `${Math.round(100 * (s.fraction || 0))}%`;
    await new Promise((r) => setTimeout(r, 150));
  }
}

// ------------------------------------------------------------------ input
function imagePoint(e) {
  const r = view.getBoundingClientRect();
  return {x: (e.clientX - r.left) * state.width / r.width, y: (e.clientY - r.top) * state.height / r.height};
}

view.addEventListener('mousedown', (e) => {
  if (!state.img || (e.button !== 0 && e.button !== 2)) return;
  e.preventDefault();
  const p = imagePoint(e);
  addClick(p.x, p.y, e.button === 0 && !e.shiftKey);
});
view.addEventListener('contextmenu', (e) => e.preventDefault());
view.addEventListener('mousemove', (e) => { state.cursor = imagePoint(e); });
view.addEventListener('mouseleave', () => { state.cursor = null; });

document.addEventListener('keydown', (e) => {
  if (e.target.tagName === 'INPUT') return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === 'z') { e.preventDefault(); undo(); return; }
  if ((e.ctrlKey || e.metaKey) && key === 's') { e.preventDefault(); save(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  switch (key) {
    case 'i': if (state.cursor) addClick(state.cursor.x, state.cursor.y, true); break;
    case 'o': if (state.cursor) addClick(state.cursor.x, state.cursor.y, false); break;
    case 'u': undo(); break;
    case 'r': reset(); break;
    case 's': save(); break;
    case 'd': $('chk-soft').checked = !$('chk-soft').checked; toggleSoft(); break;
    case 'a': addObject(); break;
    case 'tab': { e.preventDefault(); const c = current(); if (c && c.objects.length) selectObject((c.selected + 1) % c.objects.length); break; }
    case 'n': case 'arrowright': case 'pagedown': openImage(state.index + 1); break;
    case 'p': case 'arrowleft': case 'pageup': openImage(state.index - 1); break;
    default: return;
  }
  e.preventDefault();
});

function addObject() {
  const c = current();
  if (!c) return;
  newObject(c);
  c.selected = c.objects.length - 1;
  state.selectedClick = -1;
  refreshPanels();
  draw();
  markovMap();
}

function toggleSoft() {
  state.showSoft = $('chk-soft').checked;
  const c = current();
  if (state.showSoft && c) c.objects.forEach((o) => { if (o.clicks.length && !o.soft) segment(o); });
  draw();
}

$('btn-undo').addEventListener('click', undo);
$('btn-reset').addEventListener('click', reset);
$('btn-save').addEventListener('click', save);
$('btn-add').addEventListener('click', addObject);
$('chk-soft').addEventListener('change', toggleSoft);

window.m2n2 = {state, openImage, addClick, save};  // for scripts and tests

refreshImageList(true).then(() => {
  if (state.images.length) openImage(0);
  else message('no images in the folder', true);
}).catch((e) => message(e.message, true));
