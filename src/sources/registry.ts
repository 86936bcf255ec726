import type { SourceConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { createEtsi014Source } from './etsi014.js';
import { createFileSource } from './file.js';
import type { LinkSource } from './link-source.js';
import { createSimulatorSource } from './simulator.js';

/** What a driver learns about the link it feeds, besides its own config section. */
export interface SourceContext {
  kmeId: string;
  linkId: string;
  /** Size of one block of material in bits (the link's block size; a multiple of 8). */
  blockBits: number;
  /** Which side of the link this KME is (see LinkSource): decides whether `take` or `fetch` will be called. */
  role: 'primary' | 'secondary' | 'loopback';
  /** The next stream position this KME has not stored yet (for drivers whose refs are stream positions). */
  startSeq: () => Promise<string>;
  log: Logger;
}

type SourceFactory = (config: SourceConfig, ctx: SourceContext) => Promise<LinkSource>;

/**
 * Device drivers by `type` (DESIGN §3.4). The config schema already limits `type` to the names below; the check
 * here guards configs built in code and names the known types.
 */
const factories: Record<string, SourceFactory> = {
  simulator: (config, ctx) => createSimulatorSource(config as Extract<SourceConfig, { type: 'simulator' }>, ctx),
  etsi014: (config, ctx) => createEtsi014Source(config as Extract<SourceConfig, { type: 'etsi014' }>, ctx),
  file: (config, ctx) => createFileSource(config as Extract<SourceConfig, { type: 'file' }>, ctx),
};

export async function createSource(config: SourceConfig, ctx: SourceContext): Promise<LinkSource> {
  const factory = factories[config.type];
  if (!factory) {
    throw new Error(`link ${ctx.linkId}: unknown source type ${JSON.stringify(config.type)}; known: ${Object.keys(factories).join(', ')}`);
  }
  return factory(config, ctx);
}
