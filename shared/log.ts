import { recordLine, type ConnectorRecord } from './telemetry';

/**
 * The connector's logger. Messages carry counts, run ids, blob paths and reasons, never row values:
 * e-mails, names and the API key stay out of logs by construction, not by filtering.
 */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** A structured run record (shared/telemetry.ts). */
  record(record: ConnectorRecord): void;
}

export const consoleLogger: Logger = {
  info: (message) => console.log(message),
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
  record: (record) => console.log(recordLine(record)),
};

export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined, record: () => undefined };
