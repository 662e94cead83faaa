#!/usr/bin/env node
// The deployment package, checked the way Azure meets it. `azd deploy` zips the project folder
// without `.azure`, the ignore file itself, `local.settings.json` and whatever `.funcignore`
// excludes (gitignore patterns) — Azure/azure-dev cli/azd/pkg/project/project_utils.go,
// createDeployableZip — and with `remoteBuild: true` Flex Consumption installs and builds that
// package itself (Oryx: npm install, npm run build). This script does the same in a scratch
// folder: zip, unpack, `npm ci`, `npm run build`; then it loads the app from the unpacked package
// the way the Functions host's Node worker does (package.json `main`, `@azure/functions-core`)
// and checks every function's registration against what the code and infra/main.json expect, and
// that the status page function answers the page the package holds. It also checks the package
// holds no test, bench, local-only or secret file.
//
// `--keep` leaves the scratch folder for a look; nothing here needs Azure or the Core Tools.
import { execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ignore from 'ignore';
import yauzl from 'yauzl';
import yazl from 'yazl';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const keep = process.argv.includes('--keep');
const scratch = mkdtempSync(path.join(tmpdir(), 'ci-braze-package-'));
const problems = [];
const fail = (message) => problems.push(message);

/** The files azd puts in the zip, as paths relative to the project folder (forward slashes). */
function packageFiles() {
  const ignoreFile = '.funcignore';
  const rules = ignore().add(readFileSync(path.join(root, ignoreFile), 'utf8').replace(/^\uFEFF/, ''));
  const files = [];
  const walk = (dir) => {
    for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const relative = dir ? `${dir}/${entry.name}` : entry.name;
      const isDir = entry.isDirectory() || (entry.isSymbolicLink() && lstatSync(path.join(root, relative)).isDirectory());
      if (isDir && entry.name === '.azure') continue;
      if (!isDir && (entry.name === ignoreFile || entry.name === 'local.settings.json')) continue;
      if (rules.ignores(isDir ? `${relative}/` : relative)) continue;
      if (isDir) walk(relative);
      else files.push(relative);
    }
  };
  walk('');
  return files.sort();
}

async function zipTo(files, zipPath) {
  const zip = new yazl.ZipFile();
  for (const file of files) zip.addFile(path.join(root, file), file);
  zip.end();
  await new Promise((resolve, reject) => zip.outputStream.pipe(createWriteStream(zipPath)).on('close', resolve).on('error', reject));
}

async function unzipTo(zipPath, dir) {
  const zip = await new Promise((resolve, reject) => yauzl.open(zipPath, { lazyEntries: true }, (error, z) => (error ? reject(error) : resolve(z))));
  await new Promise((resolve, reject) => {
    zip.on('error', reject);
    zip.on('end', resolve);
    zip.on('entry', (entry) => {
      const target = path.join(dir, entry.fileName);
      if (entry.fileName.endsWith('/')) {
        mkdirSync(target, { recursive: true });
        zip.readEntry();
        return;
      }
      mkdirSync(path.dirname(target), { recursive: true });
      zip.openReadStream(entry, (error, stream) => {
        if (error) return reject(error);
        stream.pipe(createWriteStream(target)).on('close', () => zip.readEntry());
      });
    });
    zip.readEntry();
  });
}

/** What must not be deployed: tests, benchmarks, local tooling, infra and docs, installed or built output, settings and secrets. */
const FORBIDDEN = [
  [/^(test|bench|local|scripts|infra|docs|sample|coverage|bench-out|\.ci|\.github|\.vscode|\.git)\//, 'development-only'],
  [/^(node_modules|dist)\//, 'installed or built here: the remote build makes its own'],
  [/(^|\/)\.azure\//, 'azd environment (holds values of the environment)'],
  [/(^|\/)(local\.settings[^/]*\.json|\.env[^/]*)$/, 'local settings or environment file'],
  [/\.(pem|pfx|key|p12|crt)$/i, 'a key or certificate'],
  [/(^|\/)__(blobstorage|queuestorage|azurite_db)[^/]*/, 'Azurite data'],
  [/(^|\/)(jest\.config\.js|tsconfig\.test\.json|eslint\.config\.mjs|azure\.yaml|bicepconfig\.json)$/, 'development-only'],
];
const REQUIRED = ['package.json', 'package-lock.json', 'host.json', 'tsconfig.json', 'page/status.html'];

function checkContents(files) {
  // Grouped by top folder, so a whole node_modules/ is one line, not forty thousand.
  const found = new Map();
  for (const file of files)
    for (const [pattern, why] of FORBIDDEN) {
      if (!pattern.test(file)) continue;
      const top = file.includes('/') ? `${file.split('/')[0]}/` : file;
      const entry = found.get(top) ?? { why, count: 0, example: file };
      entry.count += 1;
      found.set(top, entry);
      break;
    }
  for (const [top, { why, count, example }] of found) fail(`the package holds ${top}${count > 1 ? ` (${count} files, e.g. ${example})` : ''}: ${why}`);
  for (const file of REQUIRED) if (!files.includes(file)) fail(`the package lacks ${file}, which the remote build or the host needs`);
  if (!files.some((f) => /^functions\/[^/]+\.ts$/.test(f))) fail('the package holds no function sources (functions/*.ts)');
}

/** package.json `main`, as the Node worker resolves it: a file, or a glob of the form `<dir>/*.js`. */
function entryFiles(pkgDir) {
  const main = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).main;
  const match = /^(.*)\/\*\.js$/.exec(main);
  if (!match) return [path.join(pkgDir, main)];
  const dir = path.join(pkgDir, match[1]);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.js'))
    .map((name) => path.join(dir, name));
}

/**
 * Loads the app in a child Node process with a stand-in for `@azure/functions-core` — the module
 * the Functions host's Node worker provides, through which `@azure/functions` registers each
 * function (setProgrammingModel, registerFunction). It records what the host would be given.
 */
function registrations(pkgDir, env) {
  const hostModules = path.join(scratch, 'host-modules');
  const core = path.join(hostModules, '@azure', 'functions-core');
  mkdirSync(core, { recursive: true });
  writeFileSync(
    path.join(core, 'index.js'),
    `const registered = [];
module.exports = {
  registered,
  setProgrammingModel() {},
  registerHook() { return { dispose() {} }; },
  log() {},
  registerFunction(metadata) { registered.push(metadata); return { dispose() {} }; },
};
`,
  );
  const loader = path.join(scratch, 'load.cjs');
  writeFileSync(
    loader,
    `const core = require('@azure/functions-core');
for (const file of JSON.parse(process.argv[2])) require(file);
process.stdout.write(JSON.stringify(core.registered));
`,
  );
  const out = execFileSync(process.execPath, [loader, JSON.stringify(entryFiles(pkgDir))], {
    cwd: pkgDir,
    env: { PATH: process.env.PATH, NODE_PATH: hostModules, ...env },
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

function triggerOf(metadata) {
  return Object.values(metadata.bindings).find((b) => /trigger$/i.test(b.type));
}

function checkRegistrations(pkgDir) {
  const req = (file) =>
    JSON.parse(
      execFileSync(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(file)})))`], { cwd: pkgDir, encoding: 'utf8' }),
    );
  const { BATCH_QUEUE, RUN_QUEUE } = req(path.join(pkgDir, 'dist/shared/storage/queueNames.js'));
  const template = JSON.parse(readFileSync(path.join(root, 'infra', 'main.json'), 'utf8'));
  const templateText = JSON.stringify(template);
  // Settings as in Azure (identity, Key Vault): loading registers, it connects to nothing.
  const azureLike = {
    AzureWebJobsStorage__blobServiceUri: 'https://stbraze.blob.core.windows.net/',
    AzureWebJobsStorage__queueServiceUri: 'https://stbraze.queue.core.windows.net/',
    AzureWebJobsStorage__tableServiceUri: 'https://stbraze.table.core.windows.net/',
    EXPORT_CONTAINER: 'customer-insights',
    BRAZE_REST_ENDPOINT: 'rest.iad-03.braze.com',
    BRAZE_API_KEY_SECRET_URI: 'https://kv-braze.vault.azure.net/secrets/braze-api-key',
    SYNC_CONFIG: readFileSync(path.join(root, 'infra', 'sync-config.json'), 'utf8'),
  };
  const http = (route, methods) => ({ type: 'httpTrigger', route, methods, authLevel: 'function' });
  const queue = (queueName) => ({ type: 'queueTrigger', queueName, connection: 'AzureWebJobsStorage' });
  const expected = {
    syncTimer: { type: 'timerTrigger', schedule: '%SYNC_SCHEDULE%' },
    syncHttp: http('sync', ['POST']),
    exportBlobDrop: { type: 'eventGridTrigger' },
    runWorker: queue(RUN_QUEUE),
    brazeSender: queue(BATCH_QUEUE),
    brazeSenderPoison: queue(`${BATCH_QUEUE}-poison`),
    runList: http('runs', ['GET']),
    runStatus: http('runs/{id}', ['GET']),
    runRejects: http('runs/{id}/rejects', ['GET']),
    runPreview: http('runs/{id}/preview', ['GET']),
    runResume: http('runs/{id}/resume', ['POST']),
    runApprove: http('runs/{id}/approve', ['POST']),
    runCancel: http('runs/{id}/cancel', ['POST']),
    reconcileHttp: http('reconcile', ['POST']),
    userLookup: http('users/{id}', ['GET']),
    statusPage: http('ui', ['GET']),
    reconcileTimer: { type: 'timerTrigger', schedule: '%RECONCILE_SCHEDULE%' },
  };
  for (const [label, env, present] of [
    ['without a reconcile schedule', azureLike, Object.keys(expected).filter((n) => n !== 'reconcileTimer')],
    ['with a reconcile schedule', { ...azureLike, RECONCILE_SCHEDULE: '0 0 3 * * *' }, Object.keys(expected)],
  ]) {
    let found;
    try {
      found = registrations(pkgDir, env);
    } catch (error) {
      fail(`the app does not load from the package ${label}: ${error.stderr || error.message}`);
      continue;
    }
    const names = found.map((m) => m.name);
    const missing = present.filter((n) => !names.includes(n));
    const unknown = names.filter((n) => !present.includes(n));
    if (missing.length) fail(`${label}: functions not registered: ${missing.join(', ')}`);
    if (unknown.length) fail(`${label}: functions registered that nothing expects: ${unknown.join(', ')}`);
    for (const metadata of found) {
      const want = expected[metadata.name];
      const trigger = triggerOf(metadata);
      if (!want || !trigger) continue;
      for (const [key, value] of Object.entries(want)) {
        const actual = key === 'methods' ? trigger.methods?.map((m) => m.toUpperCase()).sort() : trigger[key];
        const wanted = key === 'methods' ? [...value].sort() : value;
        if (JSON.stringify(actual) !== JSON.stringify(wanted))
          fail(`${metadata.name}: ${key} is ${JSON.stringify(actual)}, expected ${JSON.stringify(wanted)}`);
      }
    }
  }
  // What the template wires up exists in the package: the queues the triggers read, the function Event Grid delivers to.
  for (const q of [RUN_QUEUE, BATCH_QUEUE]) if (!templateText.includes(q)) fail(`infra/main.json creates no queue ${q}, which a function reads`);
  if (!templateText.includes('/functions/exportBlobDrop')) fail('infra/main.json subscribes no function named exportBlobDrop to BlobCreated');
  return Object.keys(expected).length;
}

/** The status page function, loaded from the built package, answers the page the package holds (it reads it relative to dist/). */
function checkStatusPage(pkgDir) {
  const probe = path.join(scratch, 'status-page.cjs');
  writeFileSync(
    probe,
    `const { HttpRequest, InvocationContext } = require('@azure/functions');
const { statusPage } = require(process.argv[2]);
statusPage(new HttpRequest({ method: 'GET', url: 'http://localhost/api/ui' }), new InvocationContext({ logHandler: () => undefined })).then((a) =>
  process.stdout.write(JSON.stringify({ status: a.status, type: a.headers && a.headers['Content-Type'], body: a.body })),
);
`,
  );
  let answer;
  try {
    answer = JSON.parse(
      execFileSync(process.execPath, [probe, path.join(pkgDir, 'dist/functions/statusPage.js')], {
        cwd: pkgDir,
        env: { PATH: process.env.PATH, NODE_PATH: path.join(pkgDir, 'node_modules') },
        stdio: ['ignore', 'pipe', 'pipe'],
        encoding: 'utf8',
      }),
    );
  } catch (error) {
    fail(`the status page function does not run from the package: ${error.stderr || error.message}`);
    return;
  }
  if (answer.status !== 200 || !/^text\/html/.test(answer.type ?? '') || answer.body !== readFileSync(path.join(pkgDir, 'page/status.html'), 'utf8'))
    fail(`statusPage answers ${answer.status} ${answer.type} from the package, not page/status.html`);
}

function run(command, args, cwd) {
  try {
    execFileSync(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    return true;
  } catch (error) {
    fail(`\`${command} ${args.join(' ')}\` failed in the unpacked package:\n${(error.stdout ?? '') + (error.stderr ?? '')}`.trimEnd());
    return false;
  }
}

try {
  const files = packageFiles();
  checkContents(files);
  const zipPath = path.join(scratch, 'package.zip');
  await zipTo(files, zipPath);
  const pkgDir = path.join(scratch, 'package');
  mkdirSync(pkgDir);
  await unzipTo(zipPath, pkgDir);
  const bytes = lstatSync(zipPath).size;
  console.log(`package: ${files.length} files, ${(bytes / 1024).toFixed(0)} KiB zipped`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  if (run(npm, ['ci', '--no-audit', '--no-fund'], pkgDir) && run(npm, ['run', 'build'], pkgDir)) {
    const checked = checkRegistrations(pkgDir);
    checkStatusPage(pkgDir);
    if (problems.length === 0)
      console.log(`package: builds from itself; ${checked} functions register as the code and the template expect, and the status page answers from it`);
  }
} finally {
  if (keep) console.log(`scratch folder kept: ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
}
if (problems.length) {
  console.error(`package check failed:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  process.exit(1);
}
