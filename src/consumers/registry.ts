import { ConnectorConfigError, type ConnectorFactory } from './connector.js';

/**
 * Connector types by the `type` a binding names (DESIGN §3.4). Each is loaded when a binding uses it, so an agent
 * that only keys MACsec never loads the VICI client. An unknown type is refused at boot, naming the known ones.
 */
const loaders: Record<string, () => Promise<ConnectorFactory>> = {
  // Each connector adds one line here: `type: async () => (await import('./file.js')).factoryName,`
  exec: async () => (await import('./exec/exec-connector.js')).execConnector,
  'macsec-mka': async () => (await import('./macsec/mka-connector.js')).macsecMkaFactory,
  'macsec-static': async () => (await import('./macsec/static-connector.js')).macsecStaticFactory,
  strongswan: async () => (await import('./strongswan/connector.js')).strongswanConnector,
};

export function connectorTypes(): string[] {
  return Object.keys(loaders).sort();
}

/** The factory of `type`; `field` names where the type came from in the agent's config, for the error. */
export async function connectorFactory(type: string, field: string): Promise<ConnectorFactory> {
  const load = Object.hasOwn(loaders, type) ? loaders[type] : undefined;
  if (!load) throw new ConnectorConfigError(field, `unknown connector type ${JSON.stringify(type)}; known: ${connectorTypes().join(', ') || 'none'}`);
  return load();
}
