import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { QueueClient } from '@azure/storage-queue';
import { z } from 'zod';

/** The queue settings of host.json the Functions host applies to every queue trigger. */
export const hostQueueSettingsSchema = z.object({
  batchSize: z.number().int().min(1).max(32).default(16),
  newBatchThreshold: z.number().int().min(0).default(8),
  maxDequeueCount: z.number().int().min(1).default(5),
  /** Delay before a failed message is visible again. */
  visibilityTimeout: z.string().default('00:00:00'),
  maxPollingInterval: z.string().default('00:00:02'),
});
export type HostQueueSettings = z.output<typeof hostQueueSettingsSchema>;

export function timeSpanSeconds(span: string): number {
  const match = /^(\d+):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(span);
  if (!match) throw new Error(`host.json time span "${span}" is not hh:mm:ss`);
  return Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]) + (match[4] ? Number(`0.${match[4]}`) : 0);
}

export function readHostQueueSettings(root: string): HostQueueSettings {
  const host = JSON.parse(readFileSync(path.join(root, 'host.json'), 'utf8')) as { extensions?: { queues?: unknown } };
  return hostQueueSettingsSchema.parse(host.extensions?.queues ?? {});
}

export interface QueueHostOptions {
  settings: HostQueueSettings;
  /** How long a received message stays invisible; renewed while its handler runs. */
  lockSeconds?: number;
  onError?: (error: unknown, dequeueCount: number) => void;
}

export type QueueHandler = (payload: string, meta: { dequeueCount: number; id: string; insertionTime: Date }) => Promise<void>;

/**
 * What the Functions host does for a queue trigger, without the host: receive up to batchSize
 * messages, fetch more when in-flight work drops to newBatchThreshold, hide each while its handler
 * runs, delete on success, make it visible again after visibilityTimeout on failure, and move it to
 * `<queue>-poison` once it has failed maxDequeueCount times.
 */
export class QueueHost {
  private running = false;
  private inFlight = 0;
  private loop?: Promise<void>;
  private lastActivityMs = Date.now();
  handled = 0;
  failed = 0;
  poisoned = 0;

  constructor(
    private readonly queue: QueueClient,
    private readonly poisonQueue: QueueClient | undefined,
    private readonly handler: QueueHandler,
    private readonly options: QueueHostOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.poll();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    while (this.inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  /** No message in hand and none received for `quietMs`. */
  isIdle(quietMs: number): boolean {
    return this.inFlight === 0 && Date.now() - this.lastActivityMs >= quietMs;
  }

  private async poll(): Promise<void> {
    const { batchSize, newBatchThreshold } = this.options.settings;
    const maxIdleMs = timeSpanSeconds(this.options.settings.maxPollingInterval) * 1000;
    let idleMs = 50;
    while (this.running) {
      if (this.inFlight > newBatchThreshold) {
        await sleep(5);
        continue;
      }
      let received;
      try {
        received = await this.queue.receiveMessages({ numberOfMessages: batchSize, visibilityTimeout: this.options.lockSeconds ?? 60 });
      } catch (error) {
        this.options.onError?.(error, 0);
        await sleep(500);
        continue;
      }
      if (received.receivedMessageItems.length === 0) {
        await sleep(idleMs);
        idleMs = Math.min(maxIdleMs, idleMs * 2);
        continue;
      }
      idleMs = 50;
      this.lastActivityMs = Date.now();
      for (const message of received.receivedMessageItems) {
        this.inFlight += 1;
        void this.run(message.messageId, message.popReceipt, message.messageText, message.dequeueCount, message.insertedOn).finally(() => {
          this.inFlight -= 1;
          this.lastActivityMs = Date.now();
        });
      }
    }
  }

  private async run(id: string, popReceipt: string, text: string, dequeueCount: number, insertionTime: Date): Promise<void> {
    const lockSeconds = this.options.lockSeconds ?? 60;
    let receipt = popReceipt;
    const renew = setInterval(
      () => {
        this.queue
          .updateMessage(id, receipt, undefined, lockSeconds)
          .then((r) => {
            receipt = r.popReceipt ?? receipt;
          })
          .catch(() => undefined);
      },
      (lockSeconds * 1000) / 3,
    );
    try {
      await this.handler(text, { dequeueCount, id, insertionTime });
      clearInterval(renew);
      this.handled += 1;
      await this.queue.deleteMessage(id, receipt).catch(() => undefined);
    } catch (error) {
      clearInterval(renew);
      this.failed += 1;
      this.options.onError?.(error, dequeueCount);
      if (dequeueCount >= this.options.settings.maxDequeueCount && this.poisonQueue) {
        await this.poisonQueue.sendMessage(text);
        await this.queue.deleteMessage(id, receipt).catch(() => undefined);
        this.poisoned += 1;
      } else {
        const delay = Math.ceil(timeSpanSeconds(this.options.settings.visibilityTimeout));
        await this.queue.updateMessage(id, receipt, undefined, delay).catch(() => undefined);
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
