// kafkajs (no flexible versions at all) against Weir: admin create, produce, a group consumer.
// Run by tests/kafka_clients.rs: node tests/kafka/kafkajs.js BOOTSTRAP
const { Kafka, logLevel } = require('kafkajs');
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
  console.log('kafkajs ok', n);
  process.exit(0);
})().catch(e => { console.error('kafkajs failed', e); process.exit(1); });
setTimeout(() => { console.error('timeout'); process.exit(2); }, 60000);
