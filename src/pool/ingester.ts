import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { availableBlocks, insertBlocks } from '../store/pool.js';
import type { KeySource } from '../sources/key-source.js';

export interface IngesterOptions {
  db: Db;
  barrier: Barrier;
  source: KeySource;
  kmeId: string;
  /** Pool cap in blocks (max_key_count): stored_key_count never exceeds it. */
  maxBlocks: number;
  maxBlocksPerBatch: number;
  log: Logger;
  /** Pause between polls when the source has nothing new or the pool is full. */
  idleMs?: number;
}

/**
 * Moves material from a key source into the pool: seal each block through the barrier, store the batch with its
 * audit event in one statement, then acknowledge it to the source. Stops at the pool cap and resumes as keys are
 * delivered. Survives database and HSM outages: it logs once, backs off and carries on when they return.
 *
 * One ingester per link and per KME: with several replicas, a later issue runs it on the leader only.
 */
export class Ingester {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failing = false;

  constructor(private readonly opts: IngesterOptions) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Ingests one batch; returns how many blocks were stored (0 when the pool is full or nothing is ready). */
  async ingestOnce(): Promise<number> {
    const { db, barrier, source, log } = this.opts;
    const room = this.opts.maxBlocks - (await availableBlocks(db, source.linkId));
    if (room <= 0) return 0;
    const blocks = source.pending(Math.min(room, this.opts.maxBlocksPerBatch));
    if (blocks.length === 0) return 0;
    const sealed = await Promise.all(
      blocks.map(async (b) => ({ seq: b.seq, ...(await barrier.seal(b.material, { linkId: source.linkId, seq: b.seq })) })),
    );
    const first = blocks[0]!.seq;
    const last = blocks[blocks.length - 1]!.seq;
    const audit = auditBody({
      operation: 'ingest',
      outcome: 'ok',
      actor: `kme:${this.opts.kmeId}`,
      detail: { link_id: source.linkId, first_seq: first, last_seq: last, blocks: blocks.length },
    });
    await insertBlocks(db, source.linkId, sealed, [audit]);
    source.acknowledge(blocks.length);
    if (this.failing) log.info({ link: source.linkId }, 'key ingest resumed');
    this.failing = false;
    return blocks.length;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick();
    }, delayMs);
  }

  private async tick(): Promise<void> {
    let delay = this.opts.idleMs ?? 100;
    try {
      // A full batch means more is probably waiting: go again at once.
      if ((await this.ingestOnce()) >= this.opts.maxBlocksPerBatch) delay = 0;
    } catch (err) {
      if (!this.failing) {
        this.opts.log.warn({ err: { message: (err as Error).message }, link: this.opts.source.linkId }, 'key ingest failing; retrying');
      }
      this.failing = true;
      delay = 1000;
    }
    this.schedule(delay);
  }
}
