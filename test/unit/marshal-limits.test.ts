// The bounded Marshal pre-check: what MCollective replies carry passes; oversized, deep, linked
// (expanding or cyclic), forbidden or lying input is refused before @hyrious/marshal sees it,
// quickly and without allocating what the message declares.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  checkMarshal,
  DEFAULT_MARSHAL_LIMITS,
  MarshalLimitError,
} from "../../src/mcollective/marshal-limits.js";
import {
  decodeReplyBody,
  decodeReplyEnvelope,
  dumpRuby,
  encodeReplyBody,
  encodeReplyEnvelope,
  encodeRequest,
  encodeSecureBody,
  loadRuby,
} from "../../src/mcollective/marshal.js";
import { McoProtocolError } from "../../src/mcollective/errors.js";

/** Marshal's compact long for a count or length (n >= 0). */
function long(n: number): number[] {
  if (n === 0) return [0];
  if (n < 123) return [n + 5];
  const bytes: number[] = [];
  for (let x = n; x > 0; x = Math.floor(x / 256)) bytes.push(x % 256);
  return [bytes.length, ...bytes];
}

/** A Marshal 4.8 message from type codes (strings) and raw bytes (number arrays). */
function msg(...parts: (string | number[] | Uint8Array)[]): Buffer {
  const chunks = parts.map((p) =>
    typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.from(p),
  );
  return Buffer.concat([Buffer.from([4, 8]), ...chunks]);
}

const refuses = (bytes: Uint8Array, pattern: RegExp, limits = DEFAULT_MARSHAL_LIMITS) =>
  assert.throws(
    () => checkMarshal(bytes, limits),
    (err: unknown) => err instanceof MarshalLimitError && pattern.test(err.message),
    `expected ${pattern}`,
  );

/** Runs fn and returns how long it took, in milliseconds. */
function timed(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

test("accepts the replies and requests MCollective exchanges", () => {
  // Bytes Ruby wrote (see mcollective.test.ts): Bignum msgtime, a Float, encoded Strings, symlinks.
  const ruby = Buffer.from(
    "04087b0b3a0d73656e6465726964492208776562063a0645543a0e726571756573746964492208616263063b0654" +
      "3a1073656e6465726167656e7449220b707570706574063b06543a0c6d736774696d656c2b0700f153653a09626f" +
      "647922017d04087b083a0f737461747573636f646569003a0e7374617475736d73674922074f4b063a0645543a09" +
      "646174617b083a0c6c61737472756e6c2b0700f153653a0f746f74616c5f74696d656608312e353a0c73756d6d61" +
      "72797b0649220e7265736f7572636573063b07547b0649220c6368616e676564063b075469073a09686173684922" +
      "0a63326c6e0a063b0646",
    "hex",
  );
  checkMarshal(ruby);
  checkMarshal(decodeReplyEnvelope(ruby).body);

  const body = encodeReplyBody({
    statuscode: 0,
    statusmsg: "OK",
    data: {
      changed_resources: 3,
      total_time: 12.25,
      lastrun: 1_700_000_000,
      negative: -1_000_000,
      config_version: "1700000000",
      tags: ["web", "prod", null, true, false],
      resources: new Map([["changed", 2]]),
      vsop_signed: JSON.stringify({ requestid: "r", data: { x: "é".repeat(200) } }),
      vsop_signature: "c2ln".repeat(90),
    },
  });
  const envelope = encodeReplyEnvelope({
    senderid: "web-prod-1.example.test",
    requestid: "0123456789abcdef0123456789abcdef",
    senderagent: "puppet",
    msgtime: 1_700_000_000,
    body,
    hash: "c2ln\n".repeat(30),
  });
  checkMarshal(envelope);
  checkMarshal(body);
  assert.equal(decodeReplyBody(decodeReplyEnvelope(envelope).body).data.changed_resources, 3);

  const secure = encodeSecureBody(
    { agent: "puppet", action: "runonce", caller: "cert=vsop", data: { noop: true } },
    60,
    1_700_000_000,
  );
  checkMarshal(
    encodeRequest({
      body: secure,
      senderid: "vsop",
      requestid: "r1",
      filter: { agent: ["puppet"], identity: ["web-prod-1.example.test"] },
      collective: "mcollective",
      agent: "puppet",
      callerid: "cert=vsop",
      ttl: 60,
      msgtime: 1_700_000_000,
      hash: "x",
    }),
  );
});

test("reads Marshal's compact integers and lengths of every width", () => {
  // (@hyrious/marshal reads 4-byte negative Fixnums below -2^24 as -1, so none of those here.)
  const ints = [
    0,
    1,
    -1,
    122,
    123,
    -123,
    -124,
    255,
    256,
    -256,
    -257,
    65_535,
    -(2 ** 23),
    2 ** 30 - 1,
  ];
  const big = [2 ** 30, -(2 ** 31), 2 ** 52];
  for (const n of [...ints, ...big]) {
    const bytes = dumpRuby([n, "x".repeat(Math.abs(n) % 70_000)]);
    checkMarshal(bytes);
    assert.deepEqual(loadRuby(bytes), [n, "x".repeat(Math.abs(n) % 70_000)]);
  }
  // -1 as a length: 0xff 0xff is one byte following, 0xff, negative.
  refuses(msg('"', [0xff, 0xff]), /negative String/);
  refuses(msg("[", [0xfe, 0xff, 0xff]), /negative Array/);
});

test("refuses more objects than maxObjects, counting links as what they repeat", () => {
  const limits = { ...DEFAULT_MARSHAL_LIMITS, maxObjects: 100 };
  checkMarshal(msg("[", long(99), "0".repeat(99)), limits);
  refuses(msg("[", long(100), "0".repeat(100)), /more than 100 objects/, limits);
  refuses(msg("{", long(50), "i\x06".repeat(100)), /more than 100 objects/, limits);
  // Each array holds two links to the one before: 2^30 values once loaded, 100 bytes here.
  const parts: (string | number[])[] = ["[", long(31), "[", long(1), "0"];
  for (let i = 1; i <= 30; i++) parts.push("[", long(2), "@", long(i), "@", long(i));
  const bomb = msg(...parts);
  assert.ok(bomb.length < 300);
  refuses(bomb, /more than 10000 objects/);
  // A few links within the limits load as shared values.
  const shared = msg("[", long(3), "[", long(1), "i\x06", "@", long(1), "@", long(1));
  checkMarshal(shared);
  assert.deepEqual(loadRuby(shared), [[1], [1], [1]]);
});

test("refuses nesting deeper than maxDepth, also through a link", () => {
  const nest = (n: number) => msg("[\x06".repeat(n), "0");
  checkMarshal(nest(32));
  refuses(nest(33), /nested deeper than 32/);
  // [A, B]: A is 20 arrays deep; B is n arrays deep around a link to A, so 1 + n + 20 loaded.
  const viaLink = (n: number) => msg("[\x07", "[\x06".repeat(20), "0", "[\x06".repeat(n), "@\x06");
  checkMarshal(viaLink(11));
  refuses(viaLink(12), /nested deeper than 32/);
  refuses(msg("[\x06@\x00"), /cycle/);
  refuses(msg("[\x07", "0", "@", long(5)), /not yet defined/);
  refuses(msg("[\x06;\x00"), /symbol not yet defined/);
});

test("refuses Strings and Symbols longer than their limit or than the message", () => {
  const limits = { ...DEFAULT_MARSHAL_LIMITS, maxStringBytes: 10, maxSymbolBytes: 4 };
  checkMarshal(msg('"', long(10), "x".repeat(10)), limits);
  refuses(msg('"', long(11), "x".repeat(11)), /String longer than 10 bytes/, limits);
  refuses(msg(":", long(5), "abcde"), /Symbol longer than 4 bytes/, limits);
  refuses(msg('"', long(1000), "short"), /String longer than the rest/);
  refuses(msg("f", long(40), "1.5"), /Float longer than the rest/);
  refuses(msg("f", long(100), "1".repeat(100)), /Float longer than 64 bytes/);
  refuses(msg("l+", long(1000), [1, 0]), /Bignum longer than 256 bytes/);
  refuses(msg("l*", long(1), [1, 0]), /Bignum without a sign/);
  refuses(msg("[", long(5), "0"), /declared entries beyond the end/);
  refuses(msg("{", long(2), "000"), /declared entries beyond the end/);
  refuses(msg("{", long(1), "0", "["), /the message ends early/);
  refuses(msg("i", [3, 1]), /number longer than the rest/);
});

test("refuses every type code a reply does not need", () => {
  const forbidden: [string, RegExp][] = [
    ["o:\x08Foo\x00", /Object is not allowed/],
    ["u:\x08Foo\x06x", /user-defined/],
    ["U:\x08Foo0", /user-marshaled/],
    ["c\x08Foo", /Class is not allowed/],
    ["m\x08Foo", /Module is not allowed/],
    ["M\x08Foo", /old Module/],
    ["e:\x08Foo[\x00", /extended object/],
    ["C:\x08Foo[\x00", /user subclass/],
    ["d:\x08Foo0", /Data is not allowed/],
    ["S:\x08Foo\x00", /Struct is not allowed/],
    ["/\x08abc\x00", /Regexp is not allowed/],
    ["Z", /unknown type code/],
    ["I[\x00\x00", /instance variables on a non-String/],
    ['I"\x06x\x07:\x06ET:\x06KT', /more than its encoding/],
    ['I"\x06x\x06:\x06KT', /other than its encoding/],
    ['I"\x06x\x06:\x06Ei\x06', /other than its encoding/],
    ['I"\x06x\x06i\x06T', /name that is not a Symbol/],
  ];
  for (const [body, pattern] of forbidden) refuses(msg(body), pattern);
  // Inside a reply body they are refused just the same.
  const nested = msg("{\x06:\x09data", "[\x06", "o:\x08Foo\x00");
  refuses(nested, /Object is not allowed/);
  assert.throws(() => loadRuby(nested), MarshalLimitError);
  // Encodings: E true/false, a named encoding, and a repeated name as a link all pass.
  const encoded = msg('[\x07I"\x06x\x06:\x06ET', 'I"\x06y\x06:\x0dencoding"\x0fISO-8859-1');
  assert.deepEqual(loadRuby(encoded), ["x", "y"]);
  checkMarshal(
    msg(
      '[\x08I"\x06x\x06:\x06ET',
      'I"\x06y\x06:\x0dencoding"\x0fISO-8859-1',
      'I"\x06z\x06;\x06@\x08',
    ),
  );
  checkMarshal(msg("}\x00", "0"));
});

test("refuses a __proto__ key, as Symbol or String", () => {
  refuses(msg("{\x06:\x0e__proto__{\x00"), /__proto__/);
  refuses(msg('{\x06"\x0e__proto__{\x00'), /__proto__/);
  refuses(msg('{\x06I"\x0e__proto__\x06:\x06ET{\x00'), /__proto__/);
  checkMarshal(msg('{\x06"\x0e__proto_x0'));
});

test("refuses malformed framing: wrong version, trailing bytes, truncation", () => {
  refuses(Buffer.from([4, 7, 0x30]), /not Ruby Marshal 4.8/);
  refuses(Buffer.from("not marshal"), /not Ruby Marshal 4.8/);
  refuses(msg("0", "0"), /trailing bytes/);
  refuses(msg("["), /ends early/);
  assert.throws(() => decodeReplyEnvelope(Buffer.from([4, 8])), McoProtocolError);
});

test("hostile sizes are refused in milliseconds without allocating what they declare", () => {
  const sixteenMB = 16 * 1024 * 1024;
  const bigString = msg('"', long(sixteenMB), Buffer.alloc(sixteenMB, 0x41));
  const deep = msg("[".repeat(100_000));
  const huge = [
    msg("[", [4, 0xff, 0xff, 0xff, 0xff]),
    msg("{", [4, 0xff, 0xff, 0xff, 0x7f]),
    msg('"', [4, 0xff, 0xff, 0xff, 0xff]),
    msg(":", [4, 0xff, 0xff, 0xff, 0xff]),
    msg("l+", [4, 0xff, 0xff, 0xff, 0x7f]),
  ];
  const heapBefore = process.memoryUsage().heapUsed;
  const ms = timed(() => {
    refuses(bigString, /String longer than 1048576 bytes/);
    assert.throws(() => loadRuby(bigString), MarshalLimitError);
    refuses(deep, /nested deeper than 32/);
    assert.throws(() => loadRuby(deep), MarshalLimitError);
    for (const bytes of huge) refuses(bytes, /beyond the end|longer than/);
  });
  const grown = process.memoryUsage().heapUsed - heapBefore;
  assert.ok(ms < 100, `took ${ms}ms`);
  assert.ok(grown < 4 * 1024 * 1024, `heap grew ${grown} bytes`);
  // The same string is fine where the caller allows it (a 16 MB reply cap).
  checkMarshal(bigString, { ...DEFAULT_MARSHAL_LIMITS, maxStringBytes: sixteenMB });
});
