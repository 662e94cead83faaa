#!/usr/bin/env node
// The status page (page/status.html) driven in a real browser, Debian's Chromium through
// playwright-core, against the local serve mode (dist/local/serve.js: Azurite, the local Braze
// server, the functions and the HTTP host, the export folder watched as Event Grid would see it).
// An operator's path end to end: Sync now on the sample export until the run shows completed with
// its counts and rejects, and Sync now with force, a run the page starts itself, likewise; then a
// refresh in which most members left, which the destination's guard
// holds; its preview; Approve; completed. Then a user lookup, the connector's view and what the
// local Braze server holds. Any violation of the page's Content-Security-Policy fails the check.
//
// Run after `npm run build` (CI runs it after the tests); not part of `npm test`.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const SERVE = path.join(root, 'dist', 'local', 'serve.js');
const SAMPLE_EXPORT = path.join(root, 'sample', 'export');
const SAMPLE_CONFIG = path.join(root, 'sample', 'config.json');
const DESTINATION = 'BrazeExport';
/** A user of the sample who stays in both segments of the second refresh. */
const STAYING_USER = { id: '1c9a4e52-0b1f-4d7e-9a11-3f1e2d4c5b01', firstName: 'Ana' };
const SERVE_START_MS = 180_000;
const RUN_MS = 180_000;
const STEP_MS = 30_000;

const say = (line) => console.log(`browser check: ${line}`);

class CheckFailure extends Error {}

/** Data records of a CI partition (no header row; a quoted value may span lines). */
function csvRecords(text) {
  let records = 0;
  let quoted = false;
  let empty = true;
  for (const c of text.replace(/^\uFEFF/, '')) {
    if (c === '"') quoted = !quoted;
    if (c === '\n' && !quoted) {
      if (!empty) records += 1;
      empty = true;
    } else if (c !== '\r') empty = false;
  }
  return records + (empty ? 0 : 1);
}

function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

/** The serve mode as a child process (its own process group, so Azurite under it goes with it), and its output kept for a failure. */
function startServe(args) {
  const output = [];
  const child = spawn(process.execPath, [SERVE, ...args], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let pageUrl;
  let onPage;
  const ready = new Promise((resolve) => (onPage = resolve));
  const exited = new Promise((_, reject) =>
    child.once('exit', (code, signal) => reject(new CheckFailure(`the serve mode exited (${signal ?? `code ${code}`}) before the check ended`))),
  );
  exited.catch(() => undefined);
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (text) => {
      const lines = (rest + text).split('\n');
      rest = lines.pop();
      for (const line of lines) {
        output.push(line);
        if (output.length > 300) output.shift();
        const match = /^page: (http:\/\/127\.0\.0\.1:\d+\/\?code=\S+)$/.exec(line.trim());
        if (match && !pageUrl) onPage((pageUrl = match[1]));
      }
    });
  }
  return { child, output, ready, exited };
}

async function stopServe(serve) {
  if (!serve || serve.child.exitCode !== null || serve.child.signalCode !== null) return;
  const gone = new Promise((resolve) => serve.child.once('exit', resolve));
  serve.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    try {
      process.kill(-serve.child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }, 15_000);
  await gone;
  clearTimeout(timer);
}

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new CheckFailure(`${what}: nothing after ${ms / 1000} s`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** Waits for a selector to show the text; fails naming what was expected and what the page showed. */
async function waitForText(page, selector, text, what, timeout = STEP_MS) {
  const locator = page.locator(selector, { hasText: text }).first();
  try {
    await locator.waitFor({ state: 'visible', timeout });
  } catch {
    const shown = await page
      .locator(selector)
      .first()
      .textContent({ timeout: 1000 })
      .catch(() => '(nothing)');
    const messages = (await page.locator('#messages .msg > span').allTextContents()).join(' | ');
    throw new CheckFailure(
      `${what}: expected ${text} in ${selector} within ${timeout / 1000} s, the page shows "${shown?.trim()}"${messages ? `; messages: ${messages.trim()}` : ''}`,
    );
  }
}

/** So that the next message is the answer to what the check does next. */
function clearMessages(page) {
  return page.locator('#messages').evaluate((box) => box.replaceChildren());
}

/** Sync now, again while the serve mode has not uploaded the export yet (the API answers that no refresh is ready). */
async function syncNow(page) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    await clearMessages(page);
    await page.click('#sync-form [data-action="sync"]');
    const message = page.locator('#messages .msg').first();
    await message.waitFor({ state: 'visible', timeout: STEP_MS });
    const kind = await message.getAttribute('data-kind');
    const text = (await message.locator('span').textContent()).trim();
    if (kind === 'info') {
      say(`Sync now answered: ${text}`);
      const runId = await page.locator('#detail').getAttribute('data-run-id');
      if (!runId) throw new CheckFailure('Sync now started a run but the page opened none');
      return runId;
    }
    if (Date.now() > deadline) throw new CheckFailure(`Sync now kept failing: ${text}`);
    await page.waitForTimeout(2000);
  }
}

/** A refresh of the sample in which most members have left, written as CI does: the partitions first, model.json last. */
function writeShrunkRefresh(exportDir, scratch) {
  const [modelFile] = filesUnder(exportDir).filter((f) => f.endsWith('model.json'));
  const destinationDir = path.dirname(modelFile);
  const model = JSON.parse(readFileSync(modelFile, 'utf8').replace(/^\uFEFF/, ''));
  const folder = '2026/11/29/0600';
  const refreshTime = '2026-11-29T06:00:41.921Z';
  let kept = 0;
  for (const entity of model.entities) {
    const [first] = entity.partitions;
    const source = path.join(destinationDir, first.location.slice(first.location.indexOf(`/${DESTINATION}/`) + DESTINATION.length + 2));
    // The staying user only: every other member leaves.
    const rows = readFileSync(source, 'utf8')
      .replace(/^\uFEFF/, '')
      .split('\n')
      .filter((line) => line.startsWith(`"${STAYING_USER.id}"`));
    if (rows.length !== 1) throw new CheckFailure(`the sample's ${entity.name} no longer lists ${STAYING_USER.id} on one line`);
    kept += rows.length;
    const name = `${entity.name}_1.csv`;
    const dir = path.join(destinationDir, entity.name, ...folder.split('/'));
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, name), `${rows.join('\n')}\n`);
    const location = first.location.slice(0, first.location.indexOf(`/${DESTINATION}/`));
    entity.partitions = [{ name: `${entity.name}_1`, refreshTime, location: `${location}/${DESTINATION}/${entity.name}/${folder}/${name}` }];
  }
  model.modifiedTime = '2026-11-29T06:01:02.114Z';
  // Whole or not at all: the serve mode uploads what it finds, and model.json starts the run.
  const staged = path.join(scratch, 'model.json');
  writeFileSync(staged, JSON.stringify(model, null, 2));
  renameSync(staged, modelFile);
  return kept;
}

async function check(page, pageUrl, exportDir, scratch, expectedRows) {
  const loaded = await page.goto(pageUrl);
  if (loaded?.status() !== 200 || !/^text\/html/.test(loaded.headers()['content-type'] ?? ''))
    throw new CheckFailure(
      `GET / answers ${loaded?.status()} ${loaded?.headers()['content-type']} (${((await loaded?.text()) ?? '').slice(0, 200)}), not the status page: the serve mode routes GET / and GET /api/ui to the statusPage function`,
    );
  if (!loaded.headers()['content-security-policy']) throw new CheckFailure('the status page comes without its Content-Security-Policy');
  // Where Azure serves it, the function's own route.
  const key = new URL(pageUrl).searchParams.get('code');
  const atRoute = await page.request.get(new URL(`/api/ui?code=${encodeURIComponent(key)}`, pageUrl).href);
  if (atRoute.status() !== 200 || (await atRoute.text()) !== (await loaded.text()))
    throw new CheckFailure(`GET /api/ui answers ${atRoute.status()}, not the page GET / answers`);
  await page.locator('#poll-status[data-kind="ok"]').waitFor({ timeout: STEP_MS });
  say('the page is up and reads the run history');

  // An answer that is not 2xx shows, with the API's reason.
  await page.fill('#reconcile-destination', 'NoSuchDestination');
  await clearMessages(page);
  await page.click('#reconcile-form [data-action="reconcile"]');
  await waitForText(
    page,
    '#messages .msg[data-kind="error"]',
    '400: destination "NoSuchDestination" is not configured',
    'a reconcile of an unknown destination',
  );
  say('an API error shows on the page');

  // What the API echoes back is text, never markup: a destination named as an element shows as typed.
  const markup = '<img src=x data-injected=1>';
  await page.fill('#reconcile-destination', markup);
  await clearMessages(page);
  await page.click('#reconcile-form [data-action="reconcile"]');
  await waitForText(page, '#messages .msg[data-kind="error"]', `destination "${markup}" is not configured`, 'a reconcile of a destination named as markup');
  if (await page.locator('[data-injected]').count()) throw new CheckFailure('text from the API was rendered as HTML: an <img> element appeared on the page');
  await page.fill('#reconcile-destination', '');
  say('text from the API shows as text');

  const firstRun = await syncNow(page);
  const row = (runId) => `#runs tr[data-run-id="${runId}"]`;
  await waitForText(page, `${row(firstRun)} [data-testid="status"]`, 'completed', `the first run ${firstRun}`, RUN_MS);
  await waitForText(page, '#detail [data-testid="detail-status"]', 'completed', 'its detail');
  await waitForText(page, '#detail [data-testid="rows-read"]', String(expectedRows), 'its rows read');
  await page.locator('#detail [data-testid="reject"]').first().waitFor({ timeout: STEP_MS });
  const rejected = await page.locator('#detail [data-testid="reject"]').count();
  say(`run ${firstRun} completed: ${expectedRows} rows read, ${rejected} rows in its rejects report`);

  // A run the page itself starts (the first may have been started by the export's blob events):
  // Sync now with force makes a new run of the same refresh.
  await page.check('#sync-force');
  const forcedRun = await syncNow(page);
  await page.uncheck('#sync-force');
  if (forcedRun === firstRun) throw new CheckFailure(`Sync now with force met ${firstRun} instead of starting a run`);
  await waitForText(page, `${row(forcedRun)} [data-testid="status"]`, 'completed', `the run ${forcedRun} started from the page`, RUN_MS);
  await waitForText(page, '#detail [data-testid="detail-status"]', 'completed', 'its detail');
  await waitForText(page, '#detail [data-testid="rows-read"]', String(expectedRows), 'its rows read');
  say(`run ${forcedRun}, started from the page, completed: ${expectedRows} rows read`);

  const kept = writeShrunkRefresh(exportDir, scratch);
  say(`a refresh keeping ${kept} memberships written into the export folder`);
  const held = page.locator('#attention li[data-status="held"]').first();
  try {
    await held.waitFor({ timeout: RUN_MS });
  } catch {
    throw new CheckFailure(`no held run on the page within ${RUN_MS / 1000} s of the shrunk refresh`);
  }
  const heldRun = await held.getAttribute('data-attention-run-id');
  await waitForText(page, `${row(heldRun)} [data-testid="status"]`, 'held', `the held run ${heldRun} in the history`);
  await held.locator('[data-action="open"]').click();
  await waitForText(page, '#detail-preview', 'leavers', `the preview of ${heldRun}`);
  say(`run ${heldRun} held by the guard; its preview shows`);

  await clearMessages(page);
  await held.locator('[data-action="approve"]').click();
  await waitForText(page, '#messages .msg', 'approved', `approving ${heldRun}`);
  await waitForText(page, `${row(heldRun)} [data-testid="status"]`, 'completed', `the approved run ${heldRun}`, RUN_MS);
  if (await page.locator(`#attention li[data-attention-run-id="${heldRun}"]`).count())
    throw new CheckFailure(`${heldRun} completed but still waits for a person on the page`);
  say(`run ${heldRun} approved and completed`);

  await page.fill('#user-id', STAYING_USER.id);
  await page.fill('#user-destination', DESTINATION);
  await page.click('#user-form [data-action="lookup"]');
  await waitForText(page, '#user-result', heldRun, `the lookup of ${STAYING_USER.id} (the run that wrote its state)`);
  await waitForText(page, '#local-braze', STAYING_USER.firstName, 'what the local Braze server holds for the user');
  say(`user ${STAYING_USER.id}: the connector's view and the local Braze profile show`);
}

async function main() {
  if (!existsSync(SERVE)) throw new CheckFailure(`${path.relative(root, SERVE)} is missing: run npm run build first`);
  if (!existsSync(CHROMIUM)) throw new CheckFailure(`${CHROMIUM} is missing: apt-get install chromium`);
  const scratch = mkdtempSync(path.join(tmpdir(), 'browser-check-'));
  const exportDir = path.join(scratch, 'export');
  cpSync(SAMPLE_EXPORT, exportDir, { recursive: true });
  const config = JSON.parse(readFileSync(SAMPLE_CONFIG, 'utf8'));
  const destination = config.destinations.find((d) => d.name === DESTINATION);
  if (!destination) throw new CheckFailure(`sample/config.json has no destination ${DESTINATION}`);
  // Hold a run that clears more than a fifth of a segment, however small the sample.
  destination.guard = { maxClearedShare: 0.2, minProfiles: 1 };
  const configFile = path.join(scratch, 'config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const expectedRows = filesUnder(SAMPLE_EXPORT)
    .filter((f) => f.endsWith('.csv'))
    .reduce((sum, f) => sum + csvRecords(readFileSync(f, 'utf8')), 0);

  let serve;
  let browser;
  let page;
  const pageProblems = [];
  const stopAll = async () => {
    await browser?.close().catch(() => undefined);
    await stopServe(serve);
  };
  const onSignal = (signal) => void stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    serve = startServe(['--state', path.join(scratch, 'state'), '--port', '0', '--export-dir', exportDir, '--config', configFile]);
    const pageUrl = await within(SERVE_START_MS, 'the serve mode printing its page line', Promise.race([serve.ready, serve.exited]));
    say(`serve mode up: ${pageUrl.replace(/code=.*/, 'code=…')}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    // Approve and Cancel ask first; an operator says yes here.
    page.on('dialog', (dialog) => void dialog.accept());
    page.on('pageerror', (error) => pageProblems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) pageProblems.push(`CSP: ${message.text()}`);
    });
    await Promise.race([check(page, pageUrl, exportDir, scratch, expectedRows), serve.exited]);
    if (pageProblems.length) throw new CheckFailure(`the page misbehaved:\n  ${pageProblems.join('\n  ')}`);
    say('passed');
    await stopAll();
    rmSync(scratch, { recursive: true, force: true });
  } catch (error) {
    console.error(`browser check failed: ${error instanceof CheckFailure ? error.message : (error?.stack ?? String(error))}`);
    for (const problem of pageProblems) console.error(`  ${problem}`);
    if (page) {
      const shot = path.join(tmpdir(), `browser-check-${Date.now()}.png`);
      try {
        await page.screenshot({ path: shot, fullPage: true });
        console.error(`screenshot: ${shot}`);
      } catch (shotError) {
        console.error(`no screenshot: ${shotError.message}`);
      }
    }
    if (serve) console.error(`last lines of the serve mode:\n${serve.output.slice(-60).join('\n')}`);
    await stopAll();
    console.error(`its files: ${scratch}`);
    process.exitCode = 1;
  }
}

await main().catch((error) => {
  console.error(`browser check failed: ${error instanceof CheckFailure ? error.message : (error?.stack ?? String(error))}`);
  process.exitCode = 1;
});
