import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createLogger } from '../../src/log.js';
import { createFileSource } from '../../src/sources/file.js';
import { DeviceKeysNotReadyError } from '../../src/sources/link-source.js';
import type { SourceContext } from '../../src/sources/registry.js';
import { findLeaks } from '../helpers/leak-scan.js';

// Two devices' drop directories with the same key files: the primary takes them, the secondary fetches them by
// name. Blocks of 256 bits (32 bytes).

const B = 32;
const root = mkdtempSync(join(tmpdir(), 'kms-file-source-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const dirA = join(root, 'a');
const dirB = join(root, 'b');
mkdirSync(dirA);
mkdirSync(dirB);

const files: Record<string, Buffer> = {
  '0001': randomBytes(2 * B + 5), // 2 blocks and a 5-byte tail
  '0002': randomBytes(B),
  '0003': randomBytes(3 * B),
  '0004': randomBytes(10), // less than a block
  '0005': randomBytes(5 * B),
  '.0000-hidden': randomBytes(B),
  '0000.tmp': randomBytes(B),
  '0000.part': randomBytes(B),
};
for (const [name, content] of Object.entries(files)) {
  writeFileSync(join(dirA, name), content);
  writeFileSync(join(dirB, name), content);
}
const outside = join(root, 'outside-secret');
writeFileSync(outside, randomBytes(4 * B));
symlinkSync(outside, join(dirA, '0000-link'));
symlinkSync(outside, join(dirB, '0000-link'));

let logText = '';
const log = createLogger({ level: 'debug' }, { write: (line: string) => void (logText += line) });
const ctx = (role: SourceContext['role']): SourceContext => ({ kmeId: 'KME_A', linkId: 'L1', blockBits: 256, role, startSeq: async () => '0', log });
const primary = await createFileSource({ type: 'file', directory: dirA, poll_ms: 500 }, ctx('primary'));
const secondary = await createFileSource({ type: 'file', directory: dirB, poll_ms: 500 }, ctx('secondary'));
t.teardown(() => Promise.all([primary.close(), secondary.close()]));

const lines = (re: RegExp) => logText.split('\n').filter((l) => re.test(l));

t.test('primary: name order, whole files, at most maxBlocks, temporary and hidden files ignored', async (t) => {
  const first = await primary.take(4);
  t.same(first.map((k) => [k.ref, k.blocks]), [['0001', 2], ['0002', 1]], '0003 (3 blocks) does not fit in the 1 left');
  t.same(first[0]!.material, files['0001']!.subarray(0, 2 * B), 'the tail is not used');
  t.same(first[1]!.material, files['0002']);

  const second = await primary.take(4);
  t.same(second.map((k) => [k.ref, k.blocks]), [['0003', 3]], 'handed-out files are not returned again; 0004 skipped; 0005 waits');

  t.same(await primary.take(4), [], '0005 alone is larger than maxBlocks: it waits');
  t.same(await primary.take(4), []);
  const last = await primary.take(100);
  t.same(last.map((k) => [k.ref, k.blocks]), [['0005', 5]]);
  t.same(await primary.take(100), [], 'nothing left: symlinks and temporary names are never read');

  t.equal(lines(/the tail is not used/).length, 1, 'tail warned once');
  t.match(lines(/the tail is not used/)[0], /"file":"0001".*"bytesIgnored":5/);
  t.equal(lines(/less than one block: skipped/).length, 1, 'empty file warned once');
  t.equal(lines(/it waits for room/).length, 1, 'waiting logged once');
  t.match(lines(/it waits for room/)[0], /"file":"0005".*"blocks":5/);

  // the secondary's device dropped the same files
  const fetched = await secondary.fetch([...first, ...second, ...last].map(({ ref, blocks }) => ({ ref, blocks })));
  t.same(fetched, [...first, ...second, ...last].map((k) => k.material), 'secondary reads the same material');
});

t.test('secondary: missing or short files are not ready; refs outside the directory are refused', async (t) => {
  await t.rejects(secondary.fetch([{ ref: '0002', blocks: 1 }, { ref: '9999', blocks: 1 }]), DeviceKeysNotReadyError);
  try {
    await secondary.fetch([{ ref: '9999', blocks: 1 }, { ref: '0002', blocks: 2 }, { ref: '0000-link', blocks: 1 }]);
    t.fail('expected not ready');
  } catch (err) {
    t.type(err, DeviceKeysNotReadyError);
    t.same((err as DeviceKeysNotReadyError).refs, ['9999', '0002', '0000-link'], 'missing, too short, a symlink');
  }
  for (const ref of ['../outside-secret', '..', 'a/b', '.hidden', '0000.tmp', '']) {
    const err = await secondary.fetch([{ ref, blocks: 1 }]).then(
      () => undefined,
      (e: Error) => e,
    );
    t.ok(err && !(err instanceof DeviceKeysNotReadyError), `${JSON.stringify(ref)} refused`);
    t.match(err?.message, /is not a plain key file name/);
  }
});

t.test('release erases: overwritten with zeros, unlinked, idempotent, never taken again', async (t) => {
  const keep = join(root, 'keep-0001');
  linkSync(join(dirA, '0001'), keep); // a second name for the same inode shows what happened to the content
  await primary.release(['0001', '0002']);
  t.notOk(existsSync(join(dirA, '0001')));
  t.notOk(existsSync(join(dirA, '0002')));
  t.ok(readFileSync(keep).every((b) => b === 0), 'content overwritten with zeros before the unlink');
  t.equal(readFileSync(keep).length, files['0001']!.length);
  await primary.release(['0001', '0002']);
  t.same(await primary.take(100), [], 'released files are gone, the rest is still handed out');
  await t.rejects(primary.release(['../outside-secret']), /not a plain key file name/);
  t.ok(existsSync(outside));
});

t.test('a missing directory is a config error naming the field', async (t) => {
  await t.rejects(createFileSource({ type: 'file', directory: join(root, 'nope'), poll_ms: 500 }, ctx('primary')), {
    name: 'ConfigError',
    message: /^\/links\/L1\/source\/directory: cannot read .*nope: ENOENT/,
  });
});

t.test('no key material in the log', async (t) => {
  t.same(findLeaks(Object.values(files), { texts: [{ where: 'log', text: logText }], bytes: [] }), []);
});
