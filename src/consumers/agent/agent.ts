import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../../config/load.js';
import { ConnectorConfigError, type Connector, type ConnectorContext } from '../connector.js';
import { connectorFactory } from '../registry.js';
import type { Binding } from './binding.js';
import type { AgentConfig, BindingConfig } from './config.js';
import { KmeClient } from './kme-client.js';
import { MasterBinding } from './master.js';
import { createPeerServer, PeerClient, type PeerHandler } from './peer-link.js';
import { SlaveBinding } from './slave.js';
import { pidFile } from './state.js';

export interface RunningAgent {
  /** The port the agent↔agent listener took (config listen.port, or the one the system chose for 0). */
  port: number;
  bindings: Map<string, Binding>;
  close: () => Promise<void>;
}

/**
 * Starts a consumer agent: every binding's connector (an unknown type or bad settings refuse the start, naming the
 * field), the listener the peer agents call, then the bindings (masters rotate at once when they hold no key).
 */
export async function startAgent(config: AgentConfig, log: Logger): Promise<RunningAgent> {
  mkdirSync(config.state_dir, { recursive: true, mode: 0o700 });
  const connectors: Connector[] = [];
  const bindings = new Map<string, Binding>();
  const handlers = new Map<string, PeerHandler>();
  try {
    for (const [i, b] of config.bindings.entries()) {
      const field = `/bindings/${i}`;
      const workDir = join(config.state_dir, `${b.name}.work`);
      mkdirSync(workDir, { recursive: true, mode: 0o700 });
      const context = { binding: b.name, role: b.role, workDir, log: log.child({ binding: b.name, connector: b.connector.type }) };
      const connector = await connectorAt(field, b.connector, context);
      connectors.push(connector);
      const parts = { config: b, stateDir: config.state_dir, connector, kme: new KmeClient(b, field), log };
      if (b.role === 'master') bindings.set(b.name, new MasterBinding(parts, new PeerClient(config, b)));
      else {
        const slave = new SlaveBinding(parts);
        bindings.set(b.name, slave);
        handlers.set(b.name, slave);
      }
    }
  } catch (err) {
    await Promise.all(connectors.map((c) => c.close().catch(() => undefined)));
    throw err;
  }
  const server = createPeerServer(config, handlers, log);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new ConfigError(`/listen: cannot listen on ${config.listen.host}:${config.listen.port}: ${err.code ?? err.message}`)));
    server.listen(config.listen.port, config.listen.host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  writeFileSync(pidFile(config.state_dir), `${process.pid}\n`, { mode: 0o600 });
  log.info({ port, bindings: [...bindings.keys()] }, 'consumer agent listening');
  for (const binding of bindings.values()) await binding.start();
  return {
    port,
    bindings,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      for (const binding of bindings.values()) await binding.close();
      await Promise.all(connectors.map((c) => c.close().catch((err: Error) => log.warn({ error: err.message }, 'closing a connector failed'))));
      rmSync(pidFile(config.state_dir), { force: true });
      log.info('consumer agent stopped');
    },
  };
}

/** The binding's connector; its type or settings errors become a ConfigError that names the field. */
async function connectorAt(field: string, settings: BindingConfig['connector'], context: ConnectorContext): Promise<Connector> {
  try {
    const factory = await connectorFactory(settings.type, `${field}/connector/type`);
    return factory.create(settings, context);
  } catch (err) {
    if (!(err instanceof ConnectorConfigError)) throw err;
    // A connector names its fields from its own settings ("connector.x"); place them in the file.
    const where = err.field.startsWith(field) ? err.field : `${field}/${err.field.replace(/\./g, '/')}`;
    throw new ConfigError(`agent config is invalid:\n  ${where}: ${err.message.slice(err.field.length + 2)}`);
  }
}
