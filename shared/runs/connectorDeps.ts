import type { AxiosInstance } from 'axios';
import type { AppSettings } from '../config/settings';
import type { SyncConfig } from '../config/syncConfig';
import type { BrazeClient } from '../braze/client';
import type { Clock } from '../clock';
import type { Logger } from '../log';
import type { BatchLedger } from './batchLedger';
import type { DestinationStore } from './destinationStore';
import type { ErasureLedger } from './erasureLedger';
import type { RunStore } from './runStore';
import type { UnitLedger } from './unitLedger';
import type { StorageClients } from '../storage/clients';

/** Everything the core needs, created once per process and passed in. */
export interface ConnectorDeps {
  settings: AppSettings;
  config: SyncConfig;
  storage: StorageClients;
  /** Run records: status (through its transitions), counts, leases. */
  runs: RunStore;
  /** Batch records and the run counters they add to. */
  batches: BatchLedger;
  /** The map and shard steps a run's reading is split into. */
  units: UnitLedger;
  /** Which run owns a destination, and where its delivered state is. */
  destinations: DestinationStore;
  /** The users each destination deleted from Braze, for audit. */
  erasures: ErasureLedger;
  /** The reading steps this process may work on at once. */
  readerSlots: { take(): Promise<(() => void) | undefined>; readonly free: boolean };
  /** The default workspace's client. */
  braze: BrazeClient;
  /** The client of a destination's workspace (its `workspace` in the mapping config), or the default one. */
  brazeFor(workspace: string | undefined): BrazeClient;
  /** A notify target's webhook URL, read from its app setting or Key Vault secret (a secret: never logged). */
  webhookUrl(target: { urlSetting?: string; urlSecretUri?: string }): Promise<string>;
  /** The HTTP client webhooks are posted with. */
  webhooks: AxiosInstance;
  clock: Clock;
  log: Logger;
}
