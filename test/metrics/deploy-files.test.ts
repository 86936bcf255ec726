import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { startTestKms } from '../helpers/kms.js';
import { exportedSeriesNames, promqlMetricNames, scrape } from '../helpers/metrics.js';

// Issue 15 item 2: the Grafana dashboard (deploy/grafana/qkms-dashboard.json) and the Prometheus alert rules
// (deploy/prometheus/qkms-alerts.yml) may only read metrics a running KME really exports: a renamed metric would
// leave a panel empty and an alert silent, without any error. Checked against the scrape of a real test KME.
// With promtool installed (Debian package `prometheus`, or PROMTOOL=path) the rules are also checked and unit-tested
// by Prometheus itself (deploy/prometheus/qkms-alerts.test.yml), and the dashboard's queries parsed.

const ROOT = join(import.meta.dirname, '../..');
const ALERTS = join(ROOT, 'deploy/prometheus/qkms-alerts.yml');
const ALERT_TESTS = join(ROOT, 'deploy/prometheus/qkms-alerts.test.yml');
const DASHBOARD = join(ROOT, 'deploy/grafana/qkms-dashboard.json');
/** Series Prometheus makes itself for each scrape target, not the KME. */
const PROMETHEUS_OWN = new Set(['up']);

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules: Rule[] = (parse(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules);

interface Panel {
  title: string;
  type: string;
  targets?: Array<{ expr: string }>;
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[]; templating: { list: Array<{ type: string; query?: { query: string } }> } };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const panelQueries = panels.flatMap((p) => (p.targets ?? []).map((q) => ({ where: `panel "${p.title}"`, expr: q.expr })));
const variableQueries = dashboard.templating.list
  .filter((v) => v.type === 'query')
  .map((v) => ({ where: `variable query ${v.query!.query}`, expr: /^label_values\((.*),\s*\w+\)$/.exec(v.query!.query)![1]! }));

let exported: Set<string>;
t.before(async () => {
  const k = await startTestKms({ ops: { listen: { host: '127.0.0.1', port: 0 } }, fill: false });
  try {
    exported = exportedSeriesNames(await scrape(k.kms.opsUrl!));
  } finally {
    await k.close();
  }
});

t.test('the alert rules read only metrics the KME exports', async (t) => {
  t.ok(rules.length >= 4);
  for (const r of rules) {
    const names = promqlMetricNames(r.expr);
    t.ok(names.length > 0, `${r.alert}: reads some metric`);
    for (const n of names) t.ok(exported.has(n) || PROMETHEUS_OWN.has(n), `${r.alert}: ${n} is exported`);
    t.ok(r.labels?.severity && r.annotations?.summary, `${r.alert}: a severity and a summary`);
  }
  const alerts = rules.map((r) => r.alert);
  for (const wanted of ['QkmsPoolBelowMinimum', 'QkmsLinkDown', 'QkmsSealerBehind', 'QkmsFallbackInUse', 'QkmsHsmErrors', 'QkmsDatabaseErrors']) {
    t.ok(alerts.includes(wanted), `alert ${wanted}`);
  }
});

t.test("the dashboard's queries read only metrics the KME exports", async (t) => {
  for (const q of [...panelQueries, ...variableQueries]) {
    const names = promqlMetricNames(q.expr);
    t.ok(names.length > 0, `${q.where}: reads some metric`);
    for (const n of names) t.ok(exported.has(n), `${q.where}: ${n} is exported`);
  }
  const titles = panels.map((p) => p.title).join('\n');
  for (const wanted of [/key rate/i, /pool level/i, /QBER/, /link up/i, /delivered/i, /fallback keys/i, /refusals by reason/i, /p50 and p99/, /sealer lag/i, /HSM errors/, /database errors/i]) {
    t.match(titles, wanted, `a panel for ${wanted}`);
  }
});

const promtool = findPromtool();
const noPromtool = promtool ? false : 'promtool not found: install the Debian package prometheus (or extract usr/bin/promtool from it and set PROMTOOL)';
t.test('promtool checks the rules, runs their unit tests and parses the dashboard queries', { skip: noPromtool }, async (t) => {
  if (!promtool) return;
  const run = (args: string[], cwd = ROOT) => execFileSync(promtool, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.match(run(['check', 'rules', ALERTS]), /SUCCESS/, 'the rules file is valid');
  t.match(run(['test', 'rules', ALERT_TESTS]), /SUCCESS/, 'the alerts fire where they should, and only there');
  // Grafana's variables replaced by what they stand for; each query becomes a recording rule for promtool to parse.
  const dir = mkdtempSync(join(tmpdir(), 'kms-dashboard-rules-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const asRules = panelQueries.map((q, i) => ({
    record: `qkms:dashboard_query_${i}`,
    expr: q.expr.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '1h').replace(/\$\w+/g, '.*'),
  }));
  writeFileSync(join(dir, 'dashboard.yml'), JSON.stringify({ groups: [{ name: 'dashboard', rules: asRules }] }));
  t.match(run(['check', 'rules', join(dir, 'dashboard.yml')]), new RegExp(`SUCCESS: ${asRules.length} rules found`), 'every dashboard query parses');
});

function findPromtool(): string | undefined {
  for (const candidate of [process.env.PROMTOOL, 'promtool']) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // not there
    }
  }
  return undefined;
}
