import type { AppSettings } from '../config/settings';
import type { SyncConfig } from '../config/syncConfig';
import type { BrazeClient } from '../braze/client';
import type { Clock } from '../braze/clock';
import type { Logger } from '../log';
import type { RunLedger } from '../runs/runLedger';
import type { StorageClients } from '../storage/clients';

/** Everything the core needs, created once per process and passed in. */
export interface ConnectorDeps {
  settings: AppSettings;
  config: SyncConfig;
  storage: StorageClients;
  ledger: RunLedger;
  braze: BrazeClient;
  clock: Clock;
  log: Logger;
}
