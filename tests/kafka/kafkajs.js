// kafkajs (no flexible versions at all) against Weir: admin create, produce, a group consumer,
// then the admin calls kafkajs users make (offsets, groups, configs, partitions, records).
// Run by tests/kafka_clients.rs: node tests/kafka/kafkajs.js BOOTSTRAP
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs');
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const kafka = new Kafka({ brokers: [process.argv[2]], logLevel: logLevel.WARN });
(async () => {
  const admin = kafka.admin(); await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kjs', numPartitions: 2 }] });
  await admin.disconnect();
  const p = kafka.producer(); await p.connect();
  await p.send({ topic: 'kjs', messages: Array.from({length: 100}, (_, i) => ({ key: 'k' + (i % 4), value: 'v' + i })) });
  await p.disconnect();
  const c = kafka.consumer({ groupId: 'kjs-g' }); await c.connect();
  await c.subscribe({ topic: 'kjs', fromBeginning: true });
  let n = 0;
  await new Promise((resolve) => c.run({ eachMessage: async () => { n++; if (n === 100) resolve(); } }));
  await c.disconnect();
  if (n !== 100) throw new Error(`consumed ${n}`);
  await adminCalls();
  await transactions();
  console.log('kafkajs ok', n);
  process.exit(0);
})().catch(e => { console.error('kafkajs failed', e); process.exit(1); });
function check(ok, what) { if (!ok) throw new Error(what); }

async function adminCalls() {
  const admin = kafka.admin(); await admin.connect();
  check((await admin.listTopics()).includes('kjs'), 'listTopics');
  const ends = await admin.fetchTopicOffsets('kjs');
  check(ends.reduce((s, p) => s + Number(p.high), 0) === 100, `fetchTopicOffsets ${JSON.stringify(ends)}`);
  const byTime = await admin.fetchTopicOffsetsByTimestamp('kjs', Date.now() - 600000);
  check(byTime.every(p => p.offset === '0'), `fetchTopicOffsetsByTimestamp ${JSON.stringify(byTime)}`);
  // The consumer group committed what it read; move it, read it back.
  const committed = await admin.fetchOffsets({ groupId: 'kjs-g', topics: ['kjs'] });
  check(committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0) === 100, `fetchOffsets ${JSON.stringify(committed)}`);
  await admin.setOffsets({ groupId: 'kjs-g', topic: 'kjs', partitions: [{ partition: 0, offset: '1' }, { partition: 1, offset: '2' }] });
  const moved = await admin.fetchOffsets({ groupId: 'kjs-g', topics: ['kjs'] });
  check(JSON.stringify(moved[0].partitions.map(p => p.offset).sort()) === '["1","2"]', `setOffsets ${JSON.stringify(moved)}`);
  const listed = await admin.listGroups();
  check(listed.groups.some(g => g.groupId === 'kjs-g'), `listGroups ${JSON.stringify(listed)}`);
  const described = await admin.describeGroups(['kjs-g']);
  check(described.groups[0].state === 'Empty', `describeGroups ${JSON.stringify(described)}`);
  const configs = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: 'kjs' }] });
  check(configs.resources[0].configEntries.some(e => e.configName === 'retention.ms'), 'describeConfigs');
  await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: 'kjs', configEntries: [{ name: 'retention.ms', value: '3600000' }] }] });
  const altered = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: 'kjs' }] });
  check(altered.resources[0].configEntries.find(e => e.configName === 'retention.ms').configValue === '3600000', 'alterConfigs');
  await admin.createPartitions({ topicPartitions: [{ topic: 'kjs', count: 3 }] });
  const md = await admin.fetchTopicMetadata({ topics: ['kjs'] });
  check(md.topics[0].partitions.length === 3, `createPartitions ${JSON.stringify(md)}`);
  await admin.deleteTopicRecords({ topic: 'kjs', partitions: [{ partition: 0, offset: '2' }] });
  const trimmed = await admin.fetchTopicOffsets('kjs');
  check(trimmed.find(p => p.partition === 0).low === '2', `deleteTopicRecords ${JSON.stringify(trimmed)}`);
  await admin.deleteGroups(['kjs-g']);
  check(!(await admin.listGroups()).groups.some(g => g.groupId === 'kjs-g'), 'deleteGroups');
  await admin.deleteTopics({ topics: ['kjs'] });
  check(!(await admin.listTopics()).includes('kjs'), 'deleteTopics');
  await admin.disconnect();
}

setTimeout(() => { console.error('timeout'); process.exit(2); }, 60000);

// A transactional producer (InitProducerId v1, AddPartitionsToTxn v1, EndTxn v1,
// AddOffsetsToTxn v1, TxnOffsetCommit v2: no flexible versions) and a read_committed
// consumer (kafkajs's default): the committed transaction is read, the aborted one never, and
// the offsets sent with the committed one reach the group.
async function transactions() {
  const admin = kafka.admin(); await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kjs-tx', numPartitions: 1 }] });
  const p = kafka.producer({ transactionalId: 'kjs-tx', idempotent: true, maxInFlightRequests: 1 });
  await p.connect();
  for (const [prefix, commit] of [['a', false], ['c', true]]) {
    const t = await p.transaction();
    await t.send({ topic: 'kjs-tx', messages: Array.from({length: 5}, (_, i) => ({ value: prefix + i })) });
    await t.sendOffsets({ consumerGroupId: 'kjs-tx-g', topics: [{ topic: 'kjs-tx', partitions: [{ partition: 0, offset: prefix === 'c' ? '7' : '3' }] }] });
    if (commit) { await t.commit(); } else { await t.abort(); }
  }
  await p.disconnect();
  const got = [];
  const c = kafka.consumer({ groupId: 'kjs-tx-reader' }); await c.connect();
  await c.subscribe({ topic: 'kjs-tx', fromBeginning: true });
  await new Promise((resolve) => c.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); if (got.length === 5) resolve(); } }));
  await new Promise((r) => setTimeout(r, 500));
  await c.disconnect();
  check(JSON.stringify(got.sort()) === '["c0","c1","c2","c3","c4"]', `read_committed ${JSON.stringify(got)}`);
  const offsets = await admin.fetchOffsets({ groupId: 'kjs-tx-g', topics: ['kjs-tx'] });
  const p0 = offsets[0].partitions.find(x => x.partition === 0);
  check(p0.offset === '7', `offsets sent with the transaction ${JSON.stringify(offsets)}`);
  await admin.disconnect();
}
