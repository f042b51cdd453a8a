// m2n2 serve in a real browser: Debian's Chromium, driven by puppeteer-core, opens the
// page, clicks a positive point on a shipped example, waits for the overlay, adds a
// negative click (right button), saves, and checks that the saved mask is the one
// `m2n2 segment` writes for the same clicks, byte for byte.
//
//   node tests/serve/test_browser.js M2N2 SOURCE_DIR [SCREENSHOT.png]
//
// Exit 77 (skipped, one line) without Chromium or puppeteer-core (see scripts/setup-debian.sh).
'use strict';
const {spawn, execFileSync} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [m2n2, root, screenshot] = process.argv.slice(2);
const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
let puppeteer;
try {
  puppeteer = require('puppeteer-core');
} catch (e) {
  console.log('skipped: puppeteer-core is not installed (npm ci --prefix tests/serve)');
  process.exit(77);
}
if (!chromium) {
  console.log('skipped: Chromium is not installed (apt-get install chromium)');
  process.exit(77);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm2n2-browser-'));
const images = path.join(tmp, 'images');
const out = path.join(tmp, 'out');
fs.mkdirSync(images);
for (const f of ['fruit.png', 'kite.png']) fs.copyFileSync(path.join(root, 'examples/images', f), path.join(images, f));

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exitCode = 1;
  throw new Error(msg);
}

function startServer() {
  return new Promise((resolve, reject) => {
    const env = {...process.env, M2N2_CACHE_DIR: path.join(tmp, 'cache')};
    const child = spawn(m2n2, ['serve', '--images', images, '--out', out, '--port', '0'], {env, stdio: ['ignore', 'ignore', 'pipe']});
    let err = '';
    const timer = setTimeout(() => reject(new Error('server did not start: ' + err)), 30000);
    child.stderr.on('data', (d) => {
      err += d;
      const m = /serving on (http:\/\/[^ ]+)/.exec(err);
      if (m) { clearTimeout(timer); resolve({child, url: m[1], stderr: () => err}); }
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}): ${err}`)));
  });
}

async function main() {
  const server = await startServer();
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1280, height: 760});
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url, {waitUntil: 'load', timeout: 30000});
    await page.waitForFunction(() => window.m2n2 && window.m2n2.state.img && window.m2n2.state.name === 'fruit.png', {timeout: 30000});
    // The token came in the URL; the page took it out of the address bar.
    if (!/[?&]token=/.test(server.url)) fail('the printed URL has no token: ' + server.url);
    if (page.url().includes('token')) fail('the token stays in the address bar: ' + page.url());

    // A page pixel of the image: the centre of image pixel (x, y) on the scaled canvas.
    const at = async (x, y) => page.evaluate((x, y) => {
      const r = document.getElementById('view').getBoundingClientRect();
      const s = window.m2n2.state;
      return {x: r.left + (x + 0.5) * r.width / s.width, y: r.top + (y + 0.5) * r.height / s.height};
    }, x, y);
    const segments = () => page.$eval('#view', (v) => Number(v.dataset.segments));

    // Positive click while the image may still be preparing: queued, then answered.
    let p = await at(120, 172);
    await page.mouse.click(p.x, p.y, {button: 'left'});
    await page.waitForFunction(() => Number(document.getElementById('view').dataset.segments) >= 1, {timeout: 120000});
    const first = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects[0].area);
    if (!(first > 1000)) fail(`first mask too small: ${first}`);
    // The overlay is on the canvas: pixels at the click differ from the plain image.
    await page.waitForFunction(() => Number(document.getElementById('markov').dataset.maps) >= 1, {timeout: 60000});

    // Negative click with the right button.
    p = await at(190, 165);
    await page.mouse.click(p.x, p.y, {button: 'right'});
    await page.waitForFunction(() => Number(document.getElementById('view').dataset.segments) >= 2, {timeout: 60000});
    const obj = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects[0]);
    // The page maps screen pixels to image pixels itself (the canvas is scaled): within a pixel.
    const aimed = [{x: 120, y: 172, positive: true}, {x: 190, y: 165, positive: false}];
    const want = obj.clicks;
    const near = want.length === 2 && want.every((k, i) =>
      Math.abs(k.x - aimed[i].x) <= 1 && Math.abs(k.y - aimed[i].y) <= 1 && k.positive === aimed[i].positive);
    if (!near) fail('clicks on the page: ' + JSON.stringify(obj.clicks));

    // Save with the key, as an annotator would.
    await page.keyboard.press('s');
    await page.waitForFunction(() => Number(document.body.dataset.saves || 0) >= 1, {timeout: 60000});
    if (screenshot) await page.screenshot({path: screenshot});
    if (pageErrors.length) fail('errors on the page: ' + pageErrors.join('; '));

    const saved = JSON.parse(fs.readFileSync(path.join(out, 'clicks.json'), 'utf8'));
    const entry = saved.images.find((e) => e.image.endsWith('fruit.png'));
    const norm = (clicks) => JSON.stringify(clicks.map((k) => [k.x, k.y, k.positive]));
    if (!entry || norm(entry.objects[0].clicks) !== norm(want)) fail('clicks.json: ' + JSON.stringify(saved));
    execFileSync(m2n2, ['segment', '--clicks', path.join(out, 'clicks.json'), '--out', path.join(tmp, 'cli'), '-q', '--no-cache'],
                 {stdio: ['ignore', 'ignore', 'inherit']});
    const a = fs.readFileSync(path.join(out, 'fruit', entry.objects[0].id + '.png'));
    const b = fs.readFileSync(path.join(tmp, 'cli', 'fruit', entry.objects[0].id + '.png'));
    if (!a.equals(b)) fail('the saved mask differs from m2n2 segment\'s');

    // The distance-map toggle (D), undo (U), a second object (A), next image (N), previous (P).
    await page.keyboard.press('d');
    await page.waitForFunction(() => window.m2n2.state.perImage.get('fruit.png').objects[0].soft !== null, {timeout: 60000});
    let n = await segments();
    await page.keyboard.press('u');
    await page.waitForFunction((n) => Number(document.getElementById('view').dataset.segments) > n, {timeout: 60000}, n);
    const afterUndo = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects[0].clicks.length);
    if (afterUndo !== 1) fail(`undo left ${afterUndo} clicks`);
    await page.keyboard.press('a');
    p = await at(330, 180);
    n = await segments();
    await page.mouse.click(p.x, p.y, {button: 'left'});
    await page.waitForFunction((n) => Number(document.getElementById('view').dataset.segments) > n, {timeout: 60000}, n);
    const objs = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects.map((o) => [o.id, o.clicks.length]));
    if (JSON.stringify(objs) !== JSON.stringify([['1', 1], ['2', 1]])) fail('objects: ' + JSON.stringify(objs));
    await page.keyboard.press('n');
    await page.waitForFunction(() => window.m2n2.state.name === 'kite.png' && window.m2n2.state.img, {timeout: 30000});
    await page.keyboard.press('p');
    await page.waitForFunction(() => window.m2n2.state.name === 'fruit.png', {timeout: 30000});
    const kept = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects.length);
    if (kept !== 2) fail('unsaved objects lost when coming back to the image');

    // Delete the saved object with its ✕, then undo: it comes back, and so does its mask.
    const maskFile = path.join(out, 'fruit', entry.objects[0].id + '.png');
    const waitFile = async (exists) => {
      for (let i = 0; i < 600 && fs.existsSync(maskFile) !== exists; ++i) await new Promise((r) => setTimeout(r, 100));
      if (fs.existsSync(maskFile) !== exists) fail(`mask ${exists ? 'not restored' : 'not deleted'}: ${maskFile}`);
    };
    // Clicked inside the page in one step: the list may be redrawn between looking an element
    // up and clicking it from outside (a detached handle under load).
    await page.waitForSelector('.del');
    await page.evaluate(() => document.querySelectorAll('.del')[0].click());
    await page.waitForFunction(() => window.m2n2.state.perImage.get('fruit.png').objects.length === 1, {timeout: 60000});
    await waitFile(false);
    let ids = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects.map((o) => o.id));
    if (JSON.stringify(ids) !== JSON.stringify(['2'])) fail('after delete: ' + JSON.stringify(ids));
    await page.keyboard.press('u');
    await waitFile(true);
    await page.waitForFunction(() => Number(document.body.dataset.restores || 0) >= 1, {timeout: 60000});
    ids = await page.evaluate(() => window.m2n2.state.perImage.get('fruit.png').objects.map((o) => o.id));
    if (JSON.stringify(ids) !== JSON.stringify(['1', '2'])) fail('after undoing the delete: ' + JSON.stringify(ids));
    if (!fs.readFileSync(maskFile).equals(a)) fail('the restored mask differs from the saved one');
    if (pageErrors.length) fail('errors on the page: ' + pageErrors.join('; '));
    console.log(`browser ok: ${want.length} clicks, mask of ${obj.area} px saved, identical to m2n2 segment`);
  } finally {
    await browser.close();
    server.child.kill('SIGINT');
    const code = await new Promise((r) => server.child.on('exit', r));
    if (code !== 0) { console.error(server.stderr()); fail(`server exit code ${code} after SIGINT`); }
    fs.rmSync(tmp, {recursive: true, force: true});
  }
}

main().catch((e) => {
  console.error(e.stack || e.message);
  process.exit(1);
});
