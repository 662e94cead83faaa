import { createConnector } from '../shared/sync/connector';
import type { ConnectorDeps } from '../shared/runs/connectorDeps';

let deps: ConnectorDeps | undefined;

/**
 * The process's one connector: settings validated, clients built, on first use. The only place
 * that reads process.env.
 */
export function connector(): ConnectorDeps {
  deps ??= createConnector({ env: process.env });
  return deps;
}

/** Lets the local runner and tests hand the functions a connector built on their own storage and Braze. */
export function useConnector(next: ConnectorDeps | undefined): void {
  deps = next;
}
