import type { SourceConfig } from '../config/schema.js';
import type { KeySource } from './key-source.js';
import { SimulatedLink } from './simulator.js';

export interface SourceContext {
  kmeId: string;
  blockBits: number;
  /** The link ID used when the config does not name one. */
  defaultLinkId: string;
  /** Where the link's stream continues (the pool's next unused position). */
  startSeq: (linkId: string) => Promise<string>;
}

type SourceFactory = (config: SourceConfig, ctx: SourceContext) => Promise<KeySource>;

/** Source drivers by `type` (DESIGN §3.4). Device drivers (a later issue) register here. */
const factories: Record<string, SourceFactory> = {
  simulator: async (config, ctx) => {
    const linkId = config.link_id ?? ctx.defaultLinkId;
    return new SimulatedLink({
      linkId,
      kmeId: ctx.kmeId,
      blockBits: ctx.blockBits,
      rateBitsPerSecond: config.rate_bits_per_second,
      startSeq: await ctx.startSeq(linkId),
    });
  },
};

export async function createSource(config: SourceConfig, ctx: SourceContext): Promise<KeySource> {
  const factory = factories[config.type];
  if (!factory) throw new Error(`unknown key source type ${JSON.stringify(config.type)}; known: ${Object.keys(factories).join(', ')}`);
  return factory(config, ctx);
}
