import type { SourceConfig } from '../config/schema.js';

export type { SourceContext } from './link-source.js';
import { createEtsi014Source } from './etsi014.js';
import { createFileSource } from './file.js';
import type { LinkSource, SourceContext } from './link-source.js';
import { createSimulatorSource } from './simulator.js';

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
