// Prints the A records of NAME as answered by SERVER (host:port), one per line.
import { promises as dns } from "node:dns";

const [server, name] = process.argv.slice(2);
const resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
resolver.setServers([server]);
for (const address of await resolver.resolve4(name)) console.log(address);
