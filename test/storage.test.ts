import assert from "node:assert/strict";
import crypto from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import { HttpStorage } from "../src/storage/http.ts";
import { decodeXmlEntities, parseListBucketResult, S3Storage } from "../src/storage/s3.ts";
import { sha256Hex } from "../src/hash.ts";
import { isWritable } from "../src/storage/writable.ts";

// s3rver ships no types; this is the part of it the tests use.
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: {
  port: number;
  address: string;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverCtor;

/**
 * s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node ≥ 17) only has
 * in its legacy provider, so every truncated listing would be a 500. Triple DES with K1 = K2 = K3 *is* single
 * DES (byte-identical output), and is in the default provider: map one onto the other while s3rver runs.
 */
function shimSingleDes(): () => void {
  const { createCipheriv, createDecipheriv } = crypto;
  const triple = (algorithm: string, key: crypto.CipherKey): [string, crypto.CipherKey] =>
    algorithm.toLowerCase() === "des" && Buffer.isBuffer(key) && key.length === 8
      ? ["des-ede3-cbc", Buffer.concat([key, key, key])]
      : [algorithm, key];
  const c = crypto as { createCipheriv: unknown; createDecipheriv: unknown };
  c.createCipheriv = (algorithm: string, key: crypto.CipherKey, iv: crypto.BinaryLike | null) => {
    const [a, k] = triple(algorithm, key);
    return createCipheriv(a, k, iv);
  };
  c.createDecipheriv = (algorithm: string, key: crypto.CipherKey, iv: crypto.BinaryLike | null) => {
    const [a, k] = triple(algorithm, key);
    return createDecipheriv(a, k, iv);
  };
  return () => {
    c.createCipheriv = createCipheriv;
    c.createDecipheriv = createDecipheriv;
  };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections(); // hung requests would otherwise keep close() waiting forever
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

const bytes = (text: string) => new TextEncoder().encode(text);

describe("S3Storage against s3rver", () => {
  let s3rver: S3rverInstance;
  let endpoint: string;
  let dataDir: string;
  let restoreDes: () => void;
  let listRequests = 0;

  // Counts ListObjectsV2 calls, so the pagination test can check it really paginated.
  const countingFetch: typeof fetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (url.includes("list-type=2")) listRequests++;
    return fetch(input, init);
  };
  const storage = (options: Partial<ConstructorParameters<typeof S3Storage>[0]> = {}) =>
    new S3Storage({
      endpoint,
      bucket: "models",
      accessKeyId: "S3RVER", // s3rver's built-in account
      secretAccessKey: "S3RVER",
      fetch: countingFetch,
      ...options,
    });

  before(async () => {
    restoreDes = shimSingleDes();
    dataDir = mkdtempSync(join(tmpdir(), "bert-edge-s3rver-"));
    s3rver = new S3rver({
      port: 0,
      address: "127.0.0.1",
      silent: true,
      directory: dataDir,
      configureBuckets: [{ name: "models" }],
    });
    const { port } = await s3rver.run();
    endpoint = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await s3rver?.close();
    restoreDes?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("is a WritableStorage", () => {
    assert.equal(isWritable(storage()), true);
    assert.equal(isWritable(new HttpStorage("http://127.0.0.1:1")), false);
  });

  test("put then get, head and getRange round-trip; keys with awkward characters survive", async () => {
    const s3 = storage({ prefix: "/roundtrip/" });
    const model = new Uint8Array(crypto.randomBytes(300_000));
    const key = "org/my model #1/onnx/model?.onnx";
    await s3.put(key, model);

    assert.deepEqual(await s3.get(key), model);
    const head = await s3.head(key);
    assert.ok(head);
    assert.equal(head.bytes, model.length);
    assert.equal(head.sha256, await sha256Hex(model));
    assert.match(head.etag, /^[0-9a-f]{32}$/); // quotes stripped

    assert.deepEqual(await s3.getRange(key, 10, 20), model.slice(10, 20));
    assert.deepEqual(await s3.getRange(key, 299_990, 400_000), model.slice(299_990)); // clipped at the end
    assert.deepEqual(await s3.getRange(key, 500_000, 500_010), new Uint8Array(0)); // past the end: 416
    assert.deepEqual(await s3.getRange(key, 5, 5), new Uint8Array(0));
    await assert.rejects(s3.getRange(key, 5, 4), RangeError);

    // The prefix is a real folder in the bucket; a storage without it sees the full key.
    assert.deepEqual(await storage().get(`roundtrip/${key}`), model);
    assert.deepEqual(await s3.list(), [key]);

    await s3.put(key, bytes("replaced"));
    assert.equal(new TextDecoder().decode((await s3.get(key))!), "replaced");
  });

  test("missing keys are null for get, head and getRange", async () => {
    const s3 = storage();
    assert.equal(await s3.get("no/such/key"), null);
    assert.equal(await s3.head("no/such/key"), null);
    assert.equal(await s3.getRange("no/such/key", 0, 10), null);
    assert.equal(await s3.getRange("no/such/key", 3, 3), null);
    assert.equal(await s3.get("../escape"), null); // unaddressable, like FolderStorage
    await assert.rejects(s3.put("a//b", bytes("x")), /invalid S3 key/);
  });

  test("a missing bucket is an error, not a missing model", async () => {
    const s3 = storage({ bucket: "no-such-bucket" });
    await assert.rejects(s3.get("k"), (err: Error & { status?: number; code?: string }) => {
      assert.equal(err.status, 404);
      assert.equal(err.code, "NoSuchBucket");
      assert.match(err.message, /s3:\/\/no-such-bucket\/k: HTTP 404 NoSuchBucket/);
      return true;
    });
    await assert.rejects(s3.list(), /NoSuchBucket/);
  });

  test("list follows continuation tokens and filters by prefix", async () => {
    const s3 = storage({ prefix: "paged", pageSize: 2 });
    const keys = [
      "org/a/config.json",
      "org/a/onnx/model.onnx",
      "org/a/tokenizer.json",
      "org/b/config.json",
      "org/b/onnx/model.onnx",
      "other/x & <y>.txt", // XML-escaped in the listing
      "zz/last",
    ];
    for (const key of keys) await s3.put(key, bytes(key));
    await storage().put("pagedish/not-ours", bytes("outside the prefix folder"));

    listRequests = 0;
    assert.deepEqual(await s3.list(), keys);
    assert.equal(listRequests, Math.ceil(keys.length / 2));

    listRequests = 0;
    assert.deepEqual(await s3.list("org/a/"), keys.slice(0, 3));
    assert.equal(listRequests, 2);
    assert.deepEqual(await s3.list("nothing/"), []);

    assert.deepEqual(await storage({ prefix: "paged" }).list(), keys); // one default-sized page
  });

  // s3rver checks that the access key exists but skips SigV4 signature verification ("unimplemented" in 3.7.1),
  // so a wrong secret is only caught by real S3; the stub test below checks how such an answer is reported.
  test("an unknown access key gives a clear error", async () => {
    await assert.rejects(storage({ accessKeyId: "NOBODY" }).get("k"), (err: Error & { code?: string; status?: number }) => {
      assert.equal(err.status, 403);
      assert.equal(err.code, "InvalidAccessKeyId");
      assert.match(err.message, /^S3 GET s3:\/\/models\/k: HTTP 403 InvalidAccessKeyId: .+check the credentials/);
      return true;
    });
    await assert.rejects(storage({ accessKeyId: "NOBODY" }).list(), /S3 LIST s3:\/\/models\/\*: HTTP 403 InvalidAccessKeyId/);
    await assert.rejects(storage({ accessKeyId: "NOBODY" }).put("k", bytes("x")), /S3 PUT .*InvalidAccessKeyId/);
    await assert.rejects(storage({ accessKeyId: "NOBODY" }).head("k"), /S3 HEAD s3:\/\/models\/k: HTTP 403/);
  });

  test("fromUrl reads the AWS_* variables from the record it is given", async () => {
    const env = { AWS_ENDPOINT_URL: endpoint, AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" };
    const s3 = S3Storage.fromUrl("s3://models/from-url/", env);
    assert.equal(s3.bucket, "models");
    assert.equal(s3.prefix, "from-url/");
    assert.equal(s3.location, `s3://models/from-url/ at ${endpoint}`);
    await s3.put("k", bytes("v"));
    assert.deepEqual(await storage().get("from-url/k"), bytes("v"));

    assert.throws(() => S3Storage.fromUrl("s3://models", {}), /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    assert.throws(() => S3Storage.fromUrl("http://models", env), /expected s3:\/\/bucket/);
    assert.equal(S3Storage.fromUrl("s3://b", { ...env, AWS_ENDPOINT_URL: undefined }).location, "s3://b/ at https://s3.us-east-1.amazonaws.com");
  });
});

describe("timeouts name the key", () => {
  let server: Server;
  let base: string;

  before(async () => {
    server = createServer((req, res) => {
      // /stall-body/...: headers and a first chunk, then nothing; anything else: no answer at all.
      if (req.url?.startsWith("/stall-body/")) {
        res.writeHead(200, { "content-length": "1000" });
        res.write("partial");
      }
    });
    base = await listen(server);
  });
  after(() => close(server));

  const withinLimit = async (promise: Promise<unknown>, pattern: RegExp) => {
    const started = Date.now();
    await assert.rejects(promise, pattern);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 2_000, `timed out after ${elapsed} ms with timeoutMs = 200`);
  };

  test("S3Storage", async () => {
    const s3 = new S3Storage({ endpoint: base, bucket: "models", accessKeyId: "a", secretAccessKey: "b", timeoutMs: 200 });
    await withinLimit(s3.get("org/model/onnx/model.onnx"), /S3 GET s3:\/\/models\/org\/model\/onnx\/model\.onnx timed out after 200 ms/);
    await withinLimit(s3.head("org/model/config.json"), /S3 HEAD s3:\/\/models\/org\/model\/config\.json timed out/);
    await withinLimit(s3.list("org/"), /S3 LIST s3:\/\/models\/org\/\* timed out/);
    await withinLimit(s3.put("org/x", bytes("x")), /S3 PUT s3:\/\/models\/org\/x timed out/);
  });

  test("S3Storage while reading the body", async () => {
    const s3 = new S3Storage({ endpoint: `${base}/stall-body`, bucket: "models", accessKeyId: "a", secretAccessKey: "b", timeoutMs: 200 });
    await withinLimit(s3.get("big.onnx"), /S3 GET s3:\/\/models\/big\.onnx timed out/);
  });

  test("HttpStorage", async () => {
    await withinLimit(new HttpStorage(base, { timeoutMs: 200 }).get("org/model/onnx/model.onnx"), /GET http:\/\/127\.0\.0\.1:\d+\/org\/model\/onnx\/model\.onnx timed out after 200 ms/);
    await withinLimit(new HttpStorage(`${base}/stall-body`, { timeoutMs: 200 }).get("big.onnx"), /stall-body\/big\.onnx timed out/);
    await withinLimit(new HttpStorage(base, { timeoutMs: 200 }).list(), /index\.json timed out/);
  });
});

describe("S3 error answers", () => {
  test("a wrong secret (SignatureDoesNotMatch, as real S3 answers it) is reported with its Code and Message", async () => {
    let authorization: string | undefined;
    const server = createServer((req, res) => {
      authorization = req.headers.authorization;
      res.writeHead(403, { "content-type": "application/xml" }).end(
        `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code>` +
          `<Message>The request signature we calculated does not match the signature you provided.</Message></Error>`,
      );
    });
    const base = await listen(server);
    try {
      const s3 = new S3Storage({ endpoint: base, bucket: "models", region: "auto", accessKeyId: "AKID", secretAccessKey: "wrong" });
      await assert.rejects(s3.get("org/m/onnx/model.onnx"), (err: Error & { code?: string }) => {
        assert.equal(err.code, "SignatureDoesNotMatch");
        assert.equal(
          err.message,
          "S3 GET s3://models/org/m/onnx/model.onnx: HTTP 403 SignatureDoesNotMatch: The request signature we calculated " +
            "does not match the signature you provided. (check the credentials; AWS also answers 403 for missing keys " +
            "when they lack s3:ListBucket)",
        );
        return true;
      });
      assert.match(authorization ?? "", /^AWS4-HMAC-SHA256 Credential=AKID\/\d{8}\/auto\/s3\/aws4_request, SignedHeaders=/);
    } finally {
      await close(server);
    }
  });
});

describe("S3 request URLs", () => {
  const urlsOf = async (options: Partial<ConstructorParameters<typeof S3Storage>[0]>, env?: Record<string, string>) => {
    const urls: string[] = [];
    const fetchImpl: typeof fetch = async (input) => {
      urls.push(input instanceof Request ? input.url : String(input));
      return new Response(new Uint8Array([1]), { status: 200 });
    };
    const s3 = env
      ? S3Storage.fromUrl("s3://my-bucket/models", env, { fetch: fetchImpl, ...options })
      : new S3Storage({ endpoint: "https://s3.example.com/base/", bucket: "my-bucket", accessKeyId: "a", secretAccessKey: "b", fetch: fetchImpl, ...options });
    await s3.get("org/a b/model.onnx");
    return urls;
  };

  test("path style by default, virtual-hosted on request, AWS virtual-hosted via fromUrl", async () => {
    assert.deepEqual(await urlsOf({}), ["https://s3.example.com/base/my-bucket/org/a%20b/model.onnx"]);
    assert.deepEqual(await urlsOf({ forcePathStyle: false, prefix: "p" }), ["https://my-bucket.s3.example.com/base/p/org/a%20b/model.onnx"]);
    assert.deepEqual(await urlsOf({}, { AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "b", AWS_REGION: "eu-west-1" }), [
      "https://my-bucket.s3.eu-west-1.amazonaws.com/models/org/a%20b/model.onnx",
    ]);
  });
});

describe("HttpStorage against a local static server", () => {
  let server: Server;
  let base: string;
  let root: string;
  const files: Record<string, string> = {
    "with-index/org/a/config.json": '{"model_type":"bert"}',
    "with-index/org/a/onnx/model.onnx": "onnx bytes",
    "with-index/org/b #2/config.json": "{}",
    "with-index/index.json": JSON.stringify(["org/b #2/config.json", "org/a/onnx/model.onnx", "org/a/config.json"]),
    "no-index/org/a/config.json": "{}",
    "bad-index/index.json": '{"keys": []}',
    "private/secret.bin": "secret",
  };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "bert-edge-http-"));
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), content);
    }
    server = createServer((req, res) => {
      const path = normalize(decodeURIComponent(new URL(req.url!, "http://x").pathname));
      if (path.startsWith("/private/") && req.headers.authorization !== "Bearer s3cret") {
        res.writeHead(401).end();
        return;
      }
      if (path.startsWith("/broken/")) {
        res.writeHead(500).end();
        return;
      }
      let body: Buffer;
      try {
        body = readFileSync(join(root, path));
      } catch {
        res.writeHead(404).end("not found");
        return;
      }
      res.writeHead(200).end(body);
    });
    base = await listen(server);
  });
  after(async () => {
    await close(server);
    rmSync(root, { recursive: true, force: true });
  });

  test("get fetches base/key; missing keys are null", async () => {
    const http = new HttpStorage(`${base}/with-index/`);
    assert.equal(http.location, `http ${base}/with-index`);
    assert.equal(new TextDecoder().decode((await http.get("org/a/onnx/model.onnx"))!), "onnx bytes");
    assert.equal(new TextDecoder().decode((await http.get("org/b #2/config.json"))!), "{}");
    assert.equal(await http.get("org/missing.json"), null);
    assert.equal(await http.get("../no-index/org/a/config.json"), null); // never escapes the base
  });

  test("list reads index.json, sorted and filtered by prefix", async () => {
    const http = new HttpStorage(`${base}/with-index`);
    assert.deepEqual(await http.list(), ["org/a/config.json", "org/a/onnx/model.onnx", "org/b #2/config.json"]);
    assert.deepEqual(await http.list("org/a/"), ["org/a/config.json", "org/a/onnx/model.onnx"]);
  });

  test("list without index.json explains what is needed", async () => {
    await assert.rejects(new HttpStorage(`${base}/no-index`).list(), /no index\.json: plain HTTP cannot list.*push CLI/);
    await assert.rejects(new HttpStorage(`${base}/bad-index`).list(), /must be a JSON array of key strings/);
  });

  test("bearer token and error statuses", async () => {
    assert.equal(new TextDecoder().decode((await new HttpStorage(`${base}/private`, { token: "s3cret" }).get("secret.bin"))!), "secret");
    await assert.rejects(new HttpStorage(`${base}/private`).get("secret.bin"), /HTTP 401 .*\(no token given\)/);
    await assert.rejects(new HttpStorage(`${base}/private`, { token: "nope" }).get("secret.bin"), /HTTP 401 .*\(token rejected\)/);
    await assert.rejects(new HttpStorage(`${base}/broken`).get("x"), (err: Error & { status?: number }) => err.status === 500);
    assert.ok(!new HttpStorage(base, { token: "s3cret" }).location.includes("s3cret"));
  });

  test("connection failures name the URL", async () => {
    const dead = createServer();
    const deadBase = await listen(dead);
    await close(dead); // the port is now closed
    await assert.rejects(new HttpStorage(deadBase).get("k"), new RegExp(`GET ${deadBase}/k failed`));
  });

  test("rejects non-HTTP base URLs", () => {
    assert.throws(() => new HttpStorage("file:///tmp/models"), /needs an http\(s\) URL/);
  });
});

describe("ListBucketResult parsing", () => {
  test("keys, truncation and token, with entities decoded", () => {
    const page = parseListBucketResult(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Name>b</Name><Prefix>a&amp;b/</Prefix><IsTruncated>true</IsTruncated>` +
        `<Contents><Key>a&amp;b/x &lt;1&gt;&#x0D;&#233;</Key><ETag>&quot;e&quot;</ETag><Size>1</Size></Contents>` +
        `<Contents><Key>a&amp;b/&apos;q&quot;</Key></Contents>` +
        `<CommonPrefixes><Prefix>a&amp;b/sub/</Prefix></CommonPrefixes>` +
        `<NextContinuationToken>t+/=&amp;</NextContinuationToken></ListBucketResult>`,
    );
    assert.deepEqual(page, { keys: ["a&b/x <1>\ré", `a&b/'q"`], truncated: true, nextToken: "t+/=&" });
    assert.deepEqual(parseListBucketResult("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"), {
      keys: [],
      truncated: false,
      nextToken: undefined,
    });
    assert.throws(() => parseListBucketResult("<Error><Code>x</Code></Error>"), /expected a ListBucketResult/);
    assert.equal(decodeXmlEntities("&unknown; &#x110000; &amp;amp;"), "&unknown; &#x110000; &amp;");
  });
});
