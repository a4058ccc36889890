// Declares the exchanges mcollectived's rabbitmq connector expects (see DESIGN.md, wire notes).
import amqp from "amqplib";

const conn = await amqp.connect(process.argv[2]);
const ch = await conn.createChannel();
await ch.assertExchange("mcollective_broadcast", "topic", { durable: true });
await ch.assertExchange("mcollective_directed", "direct", { durable: true });
await conn.close();
console.log("declared mcollective_broadcast (topic) and mcollective_directed (direct)");
