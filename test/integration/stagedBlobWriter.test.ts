import { BlobServiceClient } from '@azure/storage-blob';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { StagedBlobWriter } from '../../shared/storage/stagedBlobWriter';

describe('a staged blob writer', () => {
  let azurite: AzuriteInstance;
  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite.stop();
  });

  it('commits exactly the lines written, in blocks of the size asked, whatever their characters and lengths', async () => {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('staged');
    await container.createIfNotExists();
    const blob = container.getBlockBlobClient('lines.ndjson');
    const writer = new StagedBlobWriter(blob, 4096);
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) {
      // Multi-byte characters (2, 3 and 4 bytes in UTF-8), and now and then a line longer than a block.
      const line =
        i % 997 === 0
          ? `{"i":${i},"v":"${'Zoë ✓ 😀 '.repeat(1200)}"}`
          : `{"i":${i},"v":"${Array.from('Zoë ✓ 😀')
              .slice(0, i % 8)
              .join('')}"}`;
      lines.push(line);
      writer.write(line);
      // As a map step does: the writes of a batch, then one flush; rows 1000-1999 one long batch, far past a block.
      if (i % 50 === 49 && (i < 1000 || i >= 1999)) await writer.flushIfFull();
    }
    await writer.close();
    const expected = lines.join('\n') + '\n';
    expect((await blob.downloadToBuffer()).toString('utf8')).toBe(expected);
    const { committedBlocks } = await blob.getBlockList('committed');
    expect(committedBlocks!.length).toBeGreaterThan(10);
    // Every block but the last is at least the size asked for.
    const sizes = committedBlocks!.map((block) => block.size);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(Buffer.byteLength(expected));
    for (const size of sizes.slice(0, -1)) expect(size).toBeGreaterThanOrEqual(4096);
    expect(writer.lines).toBe(3000);
  });

  it('commits an empty blob when nothing was written', async () => {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('staged');
    await container.createIfNotExists();
    const blob = container.getBlockBlobClient('empty.ndjson');
    const writer = new StagedBlobWriter(blob, 4096);
    await writer.close();
    expect((await blob.downloadToBuffer()).length).toBe(0);
  });
});
