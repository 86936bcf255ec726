import t from 'tap';
import { ConnectorConfigError } from '../../../src/consumers/connector.js';
import { parseStrongswanSettings } from '../../../src/consumers/strongswan/settings.js';

// A strongswan binding's settings are checked when the agent starts; each mistake names its field.

const definition = { version: 2, remote_addrs: ['192.0.2.2'], children: { net: { remote_ts: ['10.0.2.0/24'] } } };

t.test('defaults: the system VICI socket, the only child, 15 s to initiate', async (t) => {
  t.same(parseStrongswanSettings({ type: 'strongswan', connection: 'site-b', definition }), {
    viciSocket: '/var/run/charon.vici',
    connection: 'site-b',
    definition,
    child: 'net',
    initiateTimeoutMs: 15000,
  });
});

t.test('each mistake names its field', async (t) => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ connection: 'x', definition, vici: '/run/charon.vici' }, 'connector.vici', /unknown setting/],
    [{ connection: 'x', definition, vici_socket: 'charon.vici' }, 'connector.vici_socket', /absolute path/],
    [{ definition }, 'connector.connection', /must name the IKE connection/],
    [{ connection: 'a b', definition }, 'connector.connection', /letters, digits/],
    [{ connection: 'x' }, 'connector.definition', /swanctl.conf/],
    [{ connection: 'x', definition: { ...definition, ppk_id: 'mine' } }, 'connector.definition.ppk_id', /set by the connector/],
    [{ connection: 'x', definition: { ...definition, ppk_required: 'no' } }, 'connector.definition.ppk_required', /set by the connector/],
    [{ connection: 'x', definition: { version: 2 } }, 'connector.definition.children', /child SA/],
    [{ connection: 'x', definition: { ...definition, local: { certs: [{}] } } }, 'connector.definition.local.certs', /list may hold only/],
    [{ connection: 'x', definition: { ...definition, version: null } }, 'connector.definition.version', /string, number, boolean/],
    [{ connection: 'x', definition: { ...definition, children: { a: {}, b: {} } } }, 'connector.child', /one of definition.children \(a, b\)/],
    [{ connection: 'x', definition, child: 'other' }, 'connector.child', /\(net\)/],
    [{ connection: 'x', definition, initiate_timeout_ms: 10 }, 'connector.initiate_timeout_ms', /at least 1000/],
  ];
  for (const [settings, field, message] of cases) {
    const err = (() => {
      try {
        parseStrongswanSettings(settings);
      } catch (e) {
        return e;
      }
    })();
    t.type(err, ConnectorConfigError, field);
    t.equal((err as ConnectorConfigError).field, field);
    t.match((err as Error).message, message);
  }
});
