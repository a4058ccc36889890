// A bounded pre-check of Ruby Marshal 4.8 bytes. @hyrious/marshal trusts what it reads: a declared
// length allocates, every nested array recurses, object links can repeat a subtree exponentially,
// and 'o'/'u'/'S' build objects a reply never needs. This scanner walks the format without
// building anything and refuses all of that before load() sees a byte. Its recursion is bounded
// by maxDepth and its loops by the bytes left, so a hostile message costs at most one pass.
import { McoProtocolError } from "./errors.js";

export interface MarshalLimits {
  /** Values in the message, an object link counted as the size of what it points at. */
  maxObjects: number;
  /** Arrays and hashes inside each other, links expanded. */
  maxDepth: number;
  /** Bytes of one String. */
  maxStringBytes: number;
  /** Bytes of one Symbol. */
  maxSymbolBytes: number;
}

export const DEFAULT_MARSHAL_LIMITS: Readonly<MarshalLimits> = {
  maxObjects: 10_000,
  maxDepth: 32,
  maxStringBytes: 1024 * 1024,
  maxSymbolBytes: 256,
};

/** Ruby writes a Float as text ("1.5", "inf") and a Bignum as 16-bit words; both are short. */
const MAX_FLOAT_BYTES = 64;
const MAX_BIGNUM_BYTES = 256;
/** Encoding names such as "Windows-1252". */
const MAX_ENCODING_NAME_BYTES = 64;

/** The message is not Marshal, or not within the limits; the text never quotes message bytes. */
export class MarshalLimitError extends McoProtocolError {
  override name = "MarshalLimitError";
}

/** Type codes an MCollective reply never carries, named for the error. */
const REFUSED: Record<string, string> = {
  o: "Object",
  u: "user-defined (_dump)",
  U: "user-marshaled (marshal_dump)",
  c: "Class",
  m: "Module",
  M: "old Module",
  e: "extended object",
  C: "user subclass",
  d: "Data",
  S: "Struct",
  "/": "Regexp",
};

/** What a scanned value stands for once loaded: values it expands to, and its nesting height. */
interface Extent {
  weight: number;
  height: number;
}

const LEAF: Extent = { weight: 1, height: 0 };
/** Marks an object-table entry whose value is still being read: a link to it is a cycle. */
const OPEN: Extent = { weight: Infinity, height: Infinity };
const PROTO = "__proto__";

class Scanner {
  private pos = 2;
  private count = 0;
  /** Extents of the values Ruby registers for '@' links, in registration order. */
  private readonly objects: Extent[] = [];
  /** Symbol names, for ';' links. */
  private readonly symbols: string[] = [];

  constructor(
    private readonly bytes: Uint8Array,
    private readonly limits: MarshalLimits,
  ) {}

  run(): void {
    if (this.bytes.length < 3 || this.bytes[0] !== 4 || this.bytes[1] !== 8)
      throw new MarshalLimitError("not Ruby Marshal 4.8");
    this.value(0);
    if (this.pos !== this.bytes.length)
      throw new MarshalLimitError("trailing bytes after the value");
  }

  /** Scans one value enclosed in `level` arrays/hashes. */
  private value(level: number): Extent {
    const code = String.fromCharCode(this.byte());
    switch (code) {
      case "0":
      case "T":
      case "F":
        return this.add(LEAF);
      case "i":
        this.long();
        return this.add(LEAF);
      case ":":
        return this.add(this.symbol());
      case ";":
        if (this.length("symbol link") >= this.symbols.length)
          throw new MarshalLimitError("symbol link to a symbol not yet defined");
        return this.add(LEAF);
      case "@":
        return this.link(level);
      case '"':
        return this.register(() => this.string(this.limits.maxStringBytes));
      case "I":
        return this.ivarString();
      case "f":
        return this.register(() => this.skip(this.length("Float"), MAX_FLOAT_BYTES, "Float"));
      case "l":
        return this.register(() => this.bignum());
      case "[":
        return this.container(level, 1);
      case "{":
        return this.container(level, 2);
      case "}":
        return this.container(level, 2, true);
      default:
        throw new MarshalLimitError(
          REFUSED[code] ? `a ${REFUSED[code]} is not allowed` : "unknown type code",
        );
    }
  }

  /** Counts a value (or a link's expansion) against maxObjects. */
  private add(extent: Extent): Extent {
    this.count += extent.weight;
    if (this.count > this.limits.maxObjects)
      throw new MarshalLimitError(`more than ${this.limits.maxObjects} objects`);
    return extent;
  }

  /** A value Ruby puts in the object table, so '@' links can point at it. */
  private register(read: () => void): Extent {
    const index = this.objects.push(OPEN) - 1;
    read();
    this.objects[index] = LEAF;
    return this.add(LEAF);
  }

  private container(level: number, perEntry: 1 | 2, withDefault = false): Extent {
    if (level + 1 > this.limits.maxDepth)
      throw new MarshalLimitError(`nested deeper than ${this.limits.maxDepth}`);
    const entries = this.length(perEntry === 1 ? "Array" : "Hash");
    // Every value takes at least one byte: a count the bytes left cannot hold is a lie.
    if (entries * perEntry > this.bytes.length - this.pos)
      throw new MarshalLimitError("declared entries beyond the end of the message");
    if (this.count + 1 + entries * perEntry > this.limits.maxObjects)
      throw new MarshalLimitError(`more than ${this.limits.maxObjects} objects`);
    const index = this.objects.push(OPEN) - 1;
    this.add(LEAF);
    const start = this.count - 1;
    let height = 0;
    const values = entries * perEntry + (withDefault ? 1 : 0);
    for (let i = 0; i < values; i++) height = Math.max(height, this.value(level + 1).height);
    const extent = { weight: this.count - start, height: height + 1 };
    this.objects[index] = extent;
    return extent;
  }

  /** '@': the same object again; loaded, it is a second copy of the whole subtree. */
  private link(level: number): Extent {
    const target = this.objects[this.length("object link")];
    if (!target) throw new MarshalLimitError("object link to an object not yet defined");
    if (target === OPEN) throw new MarshalLimitError("object link into itself (a cycle)");
    if (level + target.height > this.limits.maxDepth)
      throw new MarshalLimitError(`nested deeper than ${this.limits.maxDepth}`);
    return this.add(target);
  }

  /** 'I' '"': a String with its encoding (:E true/false, or :encoding "name"). */
  private ivarString(): Extent {
    if (this.byte() !== 0x22) throw new MarshalLimitError("instance variables on a non-String");
    this.register(() => this.string(this.limits.maxStringBytes));
    const ivars = this.length("instance variable count");
    if (ivars > 1) throw new MarshalLimitError("a String with more than its encoding");
    if (ivars === 1) {
      const name = this.symbolName();
      const next = String.fromCharCode(this.byte());
      if (name === "E" && (next === "T" || next === "F")) this.add(LEAF);
      else if (name === "encoding" && next === '"')
        this.register(() => this.string(MAX_ENCODING_NAME_BYTES));
      else if (name === "encoding" && next === "@") this.link(0);
      else throw new MarshalLimitError("a String instance variable other than its encoding");
    }
    return LEAF;
  }

  /** The name of a ':' symbol or ';' symbol link. */
  private symbolName(): string {
    const code = this.byte();
    if (code === 0x3a) {
      this.add(this.symbol());
      return this.symbols[this.symbols.length - 1]!;
    }
    if (code === 0x3b) {
      const name = this.symbols[this.length("symbol link")];
      if (name === undefined)
        throw new MarshalLimitError("symbol link to a symbol not yet defined");
      this.add(LEAF);
      return name;
    }
    throw new MarshalLimitError("an instance variable name that is not a Symbol");
  }

  private symbol(): Extent {
    const len = this.length("Symbol");
    const start = this.pos;
    this.skip(len, this.limits.maxSymbolBytes, "Symbol");
    // Symbols are short (maxSymbolBytes) and few (maxObjects): keeping their names is bounded.
    const name = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + start, len).toString(
      "latin1",
    );
    if (name === PROTO) throw new MarshalLimitError(`a ${PROTO} key`);
    this.symbols.push(name);
    return LEAF;
  }

  private string(max: number): void {
    const len = this.length("String");
    const start = this.pos;
    this.skip(len, max, "String");
    // As a hash key, "__proto__" would replace the loaded object's prototype.
    if (len === PROTO.length && this.isProto(start)) throw new MarshalLimitError(`a ${PROTO} key`);
  }

  private isProto(start: number): boolean {
    for (let i = 0; i < PROTO.length; i++)
      if (this.bytes[start + i] !== PROTO.charCodeAt(i)) return false;
    return true;
  }

  private bignum(): void {
    const sign = this.byte();
    if (sign !== 0x2b && sign !== 0x2d) throw new MarshalLimitError("a Bignum without a sign");
    const words = this.length("Bignum");
    this.skip(words * 2, MAX_BIGNUM_BYTES, "Bignum");
  }

  /** Steps over n bytes of a String, Symbol, Float or Bignum, checking both bounds first. */
  private skip(n: number, max: number, what: string): void {
    if (n > max) throw new MarshalLimitError(`a ${what} longer than ${max} bytes`);
    if (n > this.bytes.length - this.pos)
      throw new MarshalLimitError(`a ${what} longer than the rest of the message`);
    this.pos += n;
  }

  /** A count or length: Marshal's compact long, which must not be negative. */
  private length(what: string): number {
    const n = this.long();
    if (n < 0) throw new MarshalLimitError(`a negative ${what}`);
    return n;
  }

  /**
   * Marshal's compact long: 0 is 0; 6..127 and -128..-6 carry value±5 in the byte itself; 1..4
   * (-1..-4) say that many little-endian bytes follow for a positive (negative) value.
   */
  private long(): number {
    const b = this.byte();
    const c = b > 127 ? b - 256 : b;
    if (c === 0) return 0;
    if (c >= 5) return c - 5;
    if (c <= -5) return c + 5;
    const n = Math.abs(c);
    if (n > this.bytes.length - this.pos)
      throw new MarshalLimitError("a number longer than the rest of the message");
    let value = 0;
    for (let i = 0; i < n; i++) value += this.bytes[this.pos + i]! * 256 ** i;
    this.pos += n;
    return c > 0 ? value : value - 256 ** n;
  }

  private byte(): number {
    if (this.pos >= this.bytes.length) throw new MarshalLimitError("the message ends early");
    return this.bytes[this.pos++]!;
  }
}

/** Throws MarshalLimitError unless the bytes are one Marshal value within the limits. */
export function checkMarshal(
  bytes: Uint8Array,
  limits: MarshalLimits = DEFAULT_MARSHAL_LIMITS,
): void {
  new Scanner(bytes, limits).run();
}
