import { QueueServiceClient } from '@azure/storage-queue';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { QueueHost, readHostQueueSettings, timeSpanSeconds } from '../../local/queueHost';
import { PROJECT_ROOT } from '../../local/stack';
import { BatchPacker } from '../../shared/queue/batchPacker';
import { decodeBatchMessage, QUEUE_MESSAGE_MAX_BYTES } from '../../shared/queue/messages';
import { keyHash } from '../../shared/state/profileIndex';

describe('the local queue host follows host.json like the Functions host', () => {
  let azurite: AzuriteInstance;
  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite.stop();
  });

  it('reads host.json queue settings', () => {
    const settings = readHostQueueSettings(PROJECT_ROOT);
    expect(settings.maxDequeueCount).toBe(5);
    expect(timeSpanSeconds('00:01:30')).toBe(90);
  });

  it('packs profiles into messages under 64 KiB, in order, none lost', async () => {
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const queue = service.getQueueClient('packed');
    await queue.createIfNotExists();
    const packer = new BatchPacker(queue, 'r-test');
    const total = 10_000;
    for (let i = 0; i < total; i++) {
      await packer.add({
        hash: keyHash(`x:${i}`),
        identifier: { external_id: `customer-${i}` },
        attributes: { first_name: `Name ${i}`, loyalty_points: i, ci_high_value: true },
        rows: 1,
        source: { partition: 0, row: i + 1 },
      });
    }
    await packer.close();
    const seen: string[] = [];
    for (;;) {
      const received = await queue.receiveMessages({ numberOfMessages: 32 });
      if (received.receivedMessageItems.length === 0) break;
      for (const m of received.receivedMessageItems) {
        expect(m.messageText.length).toBeLessThan(QUEUE_MESSAGE_MAX_BYTES);
        const message = decodeBatchMessage(m.messageText);
        for (const p of message.profiles) seen.push('external_id' in p.identifier ? p.identifier.external_id : '');
        await queue.deleteMessage(m.messageId, m.popReceipt);
      }
    }
    expect(packer.messages).toBeLessThan(total / 75 / 5);
    expect(new Set(seen).size).toBe(total);
  });

  it('retries a failing message maxDequeueCount times, then moves it to <queue>-poison', async () => {
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const queue = service.getQueueClient('work');
    const poison = service.getQueueClient('work-poison');
    await queue.createIfNotExists();
    await poison.createIfNotExists();
    await queue.sendMessage('always fails');
    await queue.sendMessage('works');
    const attempts = new Map<string, number>();
    const host = new QueueHost(
      queue,
      poison,
      async (text) => {
        attempts.set(text, (attempts.get(text) ?? 0) + 1);
        if (text === 'always fails') throw new Error('boom');
      },
      {
        settings: { batchSize: 16, newBatchThreshold: 8, maxDequeueCount: 3, visibilityTimeout: '00:00:00', maxPollingInterval: '00:00:00.100' },
        lockSeconds: 5,
      },
    );
    host.start();
    const deadline = Date.now() + 20_000;
    while (host.poisoned === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await host.stop();
    expect(attempts.get('always fails')).toBe(3);
    expect(attempts.get('works')).toBe(1);
    const poisoned = await poison.receiveMessages();
    expect(poisoned.receivedMessageItems.map((m) => m.messageText)).toEqual(['always fails']);
    expect((await queue.getProperties()).approximateMessagesCount).toBe(0);
  });
});
