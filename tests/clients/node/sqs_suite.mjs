// Ferry's SQS endpoint driven by the AWS SDK for JavaScript v3 (@aws-sdk/client-sqs, AWS JSON 1.0)
// with its MD5 validation on: the client is given an explicit MD5 implementation that counts its
// digests, so the suite can prove every send and receive was checked by the SDK itself.
//
//   FERRY_SQS_ENDPOINT     http://host:port of the node the suite talks to (required)
//   FERRY_SQS_ENDPOINT_2   a second node, for the follower scenario (default: the first)
//   FERRY_SQS_ACCOUNT      the account id expected in queue URLs and ARNs (default 000000000000)
//   FERRY_SUITE_ONLY       comma-separated scenario names to run (optional)
//
// The last line is `node-json: N passed, N failed`; the exit status is 0 only if all passed.

import { createHash, randomBytes } from "node:crypto";
import * as sqs from "@aws-sdk/client-sqs";

const {
  SQSClient,
  SQSServiceException,
  CreateQueueCommand,
  GetQueueUrlCommand,
  ListQueuesCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SetQueueAttributesCommand,
  SendMessageCommand,
  SendMessageBatchCommand,
  ReceiveMessageCommand,
  DeleteMessageCommand,
  DeleteMessageBatchCommand,
  ChangeMessageVisibilityCommand,
  ChangeMessageVisibilityBatchCommand,
  PurgeQueueCommand,
  TagQueueCommand,
  UntagQueueCommand,
  ListQueueTagsCommand,
} = sqs;

const ACCOUNT = process.env.FERRY_SQS_ACCOUNT || "000000000000";
const REGION = "us-east-1";
const MIB = 1024 * 1024;
const ENDPOINT = (process.env.FERRY_SQS_ENDPOINT || "").replace(/\/$/, "");
const ENDPOINT_2 = (process.env.FERRY_SQS_ENDPOINT_2 || ENDPOINT).replace(/\/$/, "");
const ONLY = new Set((process.env.FERRY_SUITE_ONLY || "").split(",").filter(Boolean));
const TAG = randomBytes(4).toString("hex");
/** Every call is aborted after this long (longer than a 20 s long poll). */
const CALL_TIMEOUT_MS = 35_000;

// Legacy (Query) error code -> [JSON __type shape, HTTP status, modeled in the SDK].
const ERRORS = {
  "AWS.SimpleQueueService.NonExistentQueue": ["QueueDoesNotExist", 400, true],
  QueueAlreadyExists: ["QueueNameExists", 400, true],
  "AWS.SimpleQueueService.PurgeQueueInProgress": ["PurgeQueueInProgress", 403, true],
  "AWS.SimpleQueueService.BatchEntryIdsNotDistinct": ["BatchEntryIdsNotDistinct", 400, true],
  "AWS.SimpleQueueService.TooManyEntriesInBatchRequest": ["TooManyEntriesInBatchRequest", 400, true],
  "AWS.SimpleQueueService.EmptyBatchRequest": ["EmptyBatchRequest", 400, true],
  ReceiptHandleIsInvalid: ["ReceiptHandleIsInvalid", 404, true],
  InvalidAttributeName: ["InvalidAttributeName", 400, true],
  InvalidAttributeValue: ["InvalidAttributeValue", 400, true],
  InvalidParameterValue: ["InvalidParameterValueException", 400, false],
};

let md5Digests = 0;
/** The SDK's `md5` option: a hash constructor (not `true`: the SDK calls `new options.md5()`). */
class CountingMd5 {
  constructor() {
    this.hash = createHash("md5");
  }
  update(data) {
    this.hash.update(data);
  }
  async digest() {
    md5Digests += 1;
    return new Uint8Array(this.hash.digest());
  }
  reset() {
    this.hash = createHash("md5");
  }
}
/** A broken MD5, to prove the SDK rejects a response whose digest does not match. */
class WrongMd5 extends CountingMd5 {
  async digest() {
    return new Uint8Array(16);
  }
}

function makeClient(endpoint, md5 = CountingMd5) {
  return new SQSClient({
    endpoint,
    region: REGION,
    credentials: { accessKeyId: "AKIDFERRYTEST", secretAccessKey: "ferry-test-secret" },
    md5,
    maxAttempts: 5,
    requestHandler: { connectionTimeout: 2_000, requestTimeout: 30_000 },
  });
}

const c1 = makeClient(ENDPOINT);
const c2 = makeClient(ENDPOINT_2);
const created = [];

class SuiteFailure extends Error {}

function check(condition, what, ...details) {
  if (!condition) throw new SuiteFailure([what, ...details.map((d) => JSON.stringify(d))].join(" "));
}

function checkEq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new SuiteFailure(`${what}: expected ${e}, got ${a}`);
}

function call(command, client = c1) {
  return client.send(command, { abortSignal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, fn, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= deadline) throw new SuiteFailure(`timed out waiting until ${what}; last: ${JSON.stringify(last)}`);
    await sleep(200);
  }
}

const qname = (suffix) => `js-${TAG}-${suffix}`;

async function create(suffix, Attributes, tags) {
  const { QueueUrl } = await call(new CreateQueueCommand({ QueueName: qname(suffix), Attributes, tags }));
  created.push(QueueUrl);
  return QueueUrl;
}

async function expectError(code, command, client = c1) {
  let result;
  try {
    result = await call(command, client);
  } catch (e) {
    const [shape, status, modeled] = ERRORS[code];
    const context = `${command.constructor.name}: ${e.name} Code=${e.Code} Type=${e.Type} HTTP ${e.$metadata?.httpStatusCode} "${e.message}"`;
    check(e instanceof SQSServiceException, `${context}: an SQSServiceException`);
    checkEq(e.Code, code, `${context}: Code (x-amzn-query-error)`);
    checkEq(e.Type, "Sender", `${context}: Type`);
    checkEq(e.$metadata?.httpStatusCode, status, `${context}: HTTP status`);
    if (modeled) checkEq(e.name, shape, `${context}: the modeled exception`);
    check(e.$metadata?.requestId, `${context}: a request id`);
    check(e.message && e.message !== "UnknownError", `${context}: a message`);
    return e;
  }
  throw new SuiteFailure(`${command.constructor.name}: expected ${code}, got ${JSON.stringify(result)}`);
}

const md5Hex = (data) => createHash("md5").update(data).digest("hex");

/** MD5OfMessageAttributes as the SDKs compute it (SQS-REFERENCE.md §1.5). */
function md5OfAttributes(attributes) {
  const parts = [];
  const put = (bytes) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    parts.push(len, Buffer.from(bytes));
  };
  for (const name of Object.keys(attributes).sort()) {
    const v = attributes[name];
    put(Buffer.from(name, "utf8"));
    put(Buffer.from(v.DataType, "utf8"));
    if (v.StringValue !== undefined) {
      parts.push(Buffer.from([1]));
      put(Buffer.from(v.StringValue, "utf8"));
    } else {
      parts.push(Buffer.from([2]));
      put(Buffer.from(v.BinaryValue));
    }
  }
  return md5Hex(Buffer.concat(parts));
}

function sameAttributes(actual = {}, expected, what) {
  checkEq(Object.keys(actual).sort(), Object.keys(expected).sort(), `${what}: attribute names`);
  for (const [name, v] of Object.entries(expected)) {
    checkEq(actual[name].DataType, v.DataType, `${what}: ${name} DataType`);
    if (v.StringValue !== undefined) checkEq(actual[name].StringValue, v.StringValue, `${what}: ${name} StringValue`);
    else checkEq(Buffer.from(actual[name].BinaryValue).toString("hex"), Buffer.from(v.BinaryValue).toString("hex"), `${what}: ${name} BinaryValue`);
  }
}

async function receive(QueueUrl, extra = {}, client = c1) {
  const out = await call(
    new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, ...extra }),
    client,
  );
  return out.Messages ?? [];
}

async function receiveN(QueueUrl, n, extra = {}, client = c1, timeoutMs = 20_000) {
  const got = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < n) {
    check(Date.now() < deadline, `received ${got.length} of ${n} messages within ${timeoutMs} ms`);
    got.push(...(await receive(QueueUrl, extra, client)));
  }
  checkEq(got.length, n, "number of messages received");
  return got;
}

async function attributes(QueueUrl, AttributeNames = ["All"], client = c1) {
  return (await call(new GetQueueAttributesCommand({ QueueUrl, AttributeNames }), client)).Attributes ?? {};
}

async function counters(QueueUrl) {
  const a = await attributes(QueueUrl, [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
  ]);
  return [a.ApproximateNumberOfMessages, a.ApproximateNumberOfMessagesNotVisible, a.ApproximateNumberOfMessagesDelayed].join(",");
}

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
const RICH = {
  str: { DataType: "String", StringValue: "hello wörld ✓ 😀 <&>" },
  num: { DataType: "Number", StringValue: "-12345.678e3" },
  bin: { DataType: "Binary", BinaryValue: ALL_BYTES },
  "meta.float": { DataType: "Number.float", StringValue: "4563442423554324324264524243.32543234" },
  "meta.custom": { DataType: "String.custom", StringValue: "custom label" },
  "meta.gif": { DataType: "Binary.gif", BinaryValue: Uint8Array.from([0x47, 0x49, 0x46, 0, 1, 0xfe, 0xff]) },
};
const TRICKY_BODY = 'line1\nline2\r\nline3\ttab <xml attr="v"> & \'apos\' ünïcödé 中文 😀';

// ----------------------------------------------------------------------------------------------
const scenarios = {
  async md5_validation_is_on() {
    const url = await create("md5");
    const before = md5Digests;
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "checked" }));
    check(md5Digests > before, "the SDK computed an MD5 for SendMessage");
    const [m] = await receiveN(url, 1);
    checkEq(m.Body, "checked", "body");
    check(md5Digests >= before + 2, "the SDK computed an MD5 for ReceiveMessage");
    // With a wrong MD5 implementation the same calls must fail: validation really runs.
    const liar = makeClient(ENDPOINT, WrongMd5);
    let failed = false;
    try {
      await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "x" }), liar);
    } catch (e) {
      failed = /checksum/i.test(String(e.message));
    }
    check(failed, "a SendMessage whose MD5 does not match is rejected by the SDK");
  },

  async queue_lifecycle() {
    const urls = [];
    for (let i = 0; i < 3; i++) urls.push(await create(`life-${i}`));
    for (let i = 0; i < 3; i++) {
      check(urls[i].endsWith(`/${ACCOUNT}/${qname(`life-${i}`)}`), "queue URL form", urls[i]);
      checkEq((await call(new GetQueueUrlCommand({ QueueName: qname(`life-${i}`) }))).QueueUrl, urls[i], "GetQueueUrl");
    }
    const listed = (await call(new ListQueuesCommand({ QueueNamePrefix: qname("life-") }))).QueueUrls ?? [];
    checkEq([...listed].sort(), [...urls].sort(), "ListQueues by prefix");
    const page1 = await call(new ListQueuesCommand({ QueueNamePrefix: qname("life-"), MaxResults: 2 }));
    checkEq(page1.QueueUrls?.length, 2, "first page");
    check(page1.NextToken, "a NextToken", page1);
    const page2 = await call(new ListQueuesCommand({ QueueNamePrefix: qname("life-"), MaxResults: 2, NextToken: page1.NextToken }));
    checkEq([...page1.QueueUrls, ...(page2.QueueUrls ?? [])].sort(), [...urls].sort(), "both pages");
    await call(new DeleteQueueCommand({ QueueUrl: urls[0] }));
    await waitFor("the deleted queue is gone", async () =>
      !((await call(new ListQueuesCommand({ QueueNamePrefix: qname("life-") }))).QueueUrls ?? []).includes(urls[0]));
    await expectError("AWS.SimpleQueueService.NonExistentQueue", new GetQueueUrlCommand({ QueueName: qname("life-0") }));
  },

  async create_idempotency() {
    const url = await create("idem", { VisibilityTimeout: "40" });
    checkEq(await create("idem", { VisibilityTimeout: "40" }), url, "same attributes, same URL");
    await expectError("QueueAlreadyExists", new CreateQueueCommand({ QueueName: qname("idem"), Attributes: { VisibilityTimeout: "41" } }));
  },

  async attributes_round_trip() {
    const url = await create("attrs");
    let a = await attributes(url);
    checkEq(a.QueueArn, `arn:aws:sqs:${REGION}:${ACCOUNT}:${qname("attrs")}`, "QueueArn");
    checkEq([a.VisibilityTimeout, a.MaximumMessageSize, a.MessageRetentionPeriod, a.DelaySeconds], ["30", String(MIB), "345600", "0"], "defaults");
    checkEq([a.ApproximateNumberOfMessages, a.ApproximateNumberOfMessagesNotVisible, a.ApproximateNumberOfMessagesDelayed], ["0", "0", "0"], "counters");
    check(Math.abs(Number(a.CreatedTimestamp) - Date.now() / 1000) < 600, "CreatedTimestamp in epoch seconds", a.CreatedTimestamp);
    const set = { VisibilityTimeout: "45", DelaySeconds: "3", MessageRetentionPeriod: "7200", MaximumMessageSize: "2048" };
    await call(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: set }));
    a = await attributes(url);
    for (const [k, v] of Object.entries(set)) checkEq(a[k], v, `${k} after SetQueueAttributes`);
    check(Number(a.LastModifiedTimestamp) >= Number(a.CreatedTimestamp), "LastModifiedTimestamp", a);
    await expectError("InvalidAttributeValue", new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { MaximumMessageSize: "1023" } }));
    await expectError("InvalidAttributeName", new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { Bogus: "1" } }));
    await expectError("InvalidParameterValue", new SendMessageCommand({ QueueUrl: url, MessageBody: "x".repeat(2049) }));
  },

  async send_receive_delete_single() {
    const url = await create("single");
    const sent = await call(new SendMessageCommand({ QueueUrl: url, MessageBody: TRICKY_BODY, MessageAttributes: RICH }));
    checkEq(sent.MD5OfMessageAttributes, md5OfAttributes(RICH), "MD5OfMessageAttributes on send");
    const [m] = await receiveN(url, 1, { MessageAttributeNames: ["All"], VisibilityTimeout: 60 });
    checkEq(m.Body, TRICKY_BODY, "body");
    checkEq(m.MessageId, sent.MessageId, "MessageId");
    sameAttributes(m.MessageAttributes, RICH, "received attributes");
    checkEq(m.MD5OfMessageAttributes, md5OfAttributes(RICH), "MD5OfMessageAttributes on receive");
    await call(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }));
    await waitFor("the queue is empty", async () => (await counters(url)) === "0,0,0");
  },

  async attribute_filters() {
    const url = await create("filters");
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "f", MessageAttributes: RICH }));
    const cases = [
      [["All"], Object.keys(RICH)],
      [["num"], ["num"]],
      [["meta.*"], ["meta.custom", "meta.float", "meta.gif"]],
      [undefined, []],
    ];
    for (const [names, expected] of cases) {
      const [m] = await receiveN(url, 1, { MessageAttributeNames: names, VisibilityTimeout: 0, MaxNumberOfMessages: 1 });
      const want = Object.fromEntries(expected.map((k) => [k, RICH[k]]));
      sameAttributes(m.MessageAttributes ?? {}, want, `filter ${names}`);
      if (expected.length) checkEq(m.MD5OfMessageAttributes, md5OfAttributes(want), `MD5 for filter ${names}`);
      else checkEq(m.MD5OfMessageAttributes, undefined, "no attribute MD5 without attributes");
    }
  },

  async system_attributes() {
    const url = await create("sys");
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "s" }));
    let [m] = await receiveN(url, 1, { MessageSystemAttributeNames: ["All"], VisibilityTimeout: 0 });
    for (const k of ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"]) {
      check(m.Attributes?.[k], `All includes ${k}`, m.Attributes);
    }
    check(Math.abs(Number(m.Attributes.SentTimestamp) - Date.now()) < 60_000, "SentTimestamp in ms", m.Attributes);
    [m] = await receiveN(url, 1, { MessageSystemAttributeNames: ["ApproximateReceiveCount", "SenderId"], VisibilityTimeout: 0 });
    checkEq(Object.keys(m.Attributes ?? {}).sort(), ["ApproximateReceiveCount", "SenderId"], "only the names asked for");
    checkEq(m.Attributes.ApproximateReceiveCount, "2", "receive count");
  },

  async batch() {
    const url = await create("batch");
    const entries = Array.from({ length: 10 }, (_, i) => ({
      Id: `e_${i}-x`,
      MessageBody: `batch ${i} ✓`,
      MessageAttributes: {
        i: { DataType: "Number", StringValue: String(i) },
        b: { DataType: "Binary.raw", BinaryValue: ALL_BYTES.slice(i) },
      },
    }));
    const sent = await call(new SendMessageBatchCommand({ QueueUrl: url, Entries: entries }));
    checkEq(sent.Failed ?? [], [], "no failed entries");
    checkEq(sent.Successful.length, 10, "10 successful");
    for (const s of sent.Successful) {
      const e = entries.find((x) => x.Id === s.Id);
      checkEq(s.MD5OfMessageAttributes, md5OfAttributes(e.MessageAttributes), `${s.Id} attribute MD5`);
    }
    const got = await receiveN(url, 10, { MessageAttributeNames: ["All"], VisibilityTimeout: 60 });
    for (const m of got) {
      const e = entries.find((x) => x.MessageBody === m.Body);
      sameAttributes(m.MessageAttributes, e.MessageAttributes, e.Id);
    }
    const del = await call(new DeleteMessageBatchCommand({
      QueueUrl: url,
      Entries: got.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle })),
    }));
    checkEq((del.Successful ?? []).length, 10, "10 deleted");
    checkEq(del.Failed ?? [], [], "no failed deletes");
    await waitFor("the batch queue is empty", async () => (await counters(url)) === "0,0,0");
  },

  async visibility() {
    const url = await create("vis");
    await call(new SendMessageBatchCommand({ QueueUrl: url, Entries: [0, 1, 2].map((i) => ({ Id: `m${i}`, MessageBody: `v${i}` })) }));
    const held = await receiveN(url, 3, { VisibilityTimeout: 60 });
    checkEq(await receive(url, { WaitTimeSeconds: 0 }), [], "all in flight");
    await call(new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: held[0].ReceiptHandle, VisibilityTimeout: 0 }));
    const [again] = await receiveN(url, 1, { VisibilityTimeout: 60, MessageSystemAttributeNames: ["ApproximateReceiveCount"] });
    checkEq([again.MessageId, again.Attributes?.ApproximateReceiveCount], [held[0].MessageId, "2"], "visible again at once");
    const result = await call(new ChangeMessageVisibilityBatchCommand({
      QueueUrl: url,
      Entries: [
        ...held.slice(1).map((m, i) => ({ Id: `c${i}`, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0 })),
        { Id: "bad", ReceiptHandle: "garbage", VisibilityTimeout: 0 },
      ],
    }));
    checkEq((result.Successful ?? []).map((e) => e.Id).sort(), ["c0", "c1"], "changed entries");
    checkEq((result.Failed ?? []).map((e) => [e.Id, e.Code, e.SenderFault]), [["bad", "ReceiptHandleIsInvalid", true]], "failed entry");
    const back = await receiveN(url, 2, { VisibilityTimeout: 60 });
    checkEq(back.map((m) => m.Body).sort(), ["v1", "v2"], "visible again after the batch change");
  },

  async long_poll() {
    const url = await create("poll");
    const started = Date.now();
    const poll = receive(url, { WaitTimeSeconds: 10, MaxNumberOfMessages: 1 }).then((messages) => ({ messages, at: Date.now() }));
    await sleep(1000); // let the request reach the server and park; the point is that it returns early
    const sentAt = Date.now();
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "wake up" }));
    const { messages, at } = await poll;
    checkEq(messages.map((m) => m.Body), ["wake up"], "the long poll got the message");
    console.log(`    long poll returned ${(at - sentAt) / 1000}s after the send (waited ${(at - started) / 1000}s)`);
    check(at - sentAt < 5000, "the long poll returned < 5 s after the send", at - sentAt);
  },

  async purge() {
    const url = await create("purge");
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "p" }));
    await call(new PurgeQueueCommand({ QueueUrl: url }));
    await waitFor("the purged queue is empty", async () => (await counters(url)) === "0,0,0");
    await expectError("AWS.SimpleQueueService.PurgeQueueInProgress", new PurgeQueueCommand({ QueueUrl: url }));
  },

  async tags() {
    const url = await create("tags", undefined, { team: "ferry" });
    checkEq((await call(new ListQueueTagsCommand({ QueueUrl: url }))).Tags, { team: "ferry" }, "tags from CreateQueue");
    await call(new TagQueueCommand({ QueueUrl: url, Tags: { env: "test", team: "core" } }));
    const tags = (await call(new ListQueueTagsCommand({ QueueUrl: url }))).Tags;
    checkEq(Object.keys(tags).sort().map((k) => [k, tags[k]]), [["env", "test"], ["team", "core"]], "after TagQueue");
    await call(new UntagQueueCommand({ QueueUrl: url, TagKeys: ["env"] }));
    checkEq((await call(new ListQueueTagsCommand({ QueueUrl: url }))).Tags, { team: "core" }, "after UntagQueue");
  },

  async errors() {
    const url = await create("errors");
    const missing = url.replace(/[^/]+$/, qname("missing"));
    await expectError("AWS.SimpleQueueService.NonExistentQueue", new GetQueueUrlCommand({ QueueName: qname("missing") }));
    await expectError("AWS.SimpleQueueService.NonExistentQueue", new SendMessageCommand({ QueueUrl: missing, MessageBody: "x" }));
    await expectError("InvalidAttributeValue", new CreateQueueCommand({ QueueName: qname("bad-attr"), Attributes: { DelaySeconds: "901" } }));
    await expectError("InvalidParameterValue", new SendMessageCommand({ QueueUrl: url, MessageBody: "a".repeat(MIB + 1) }));
    await expectError("InvalidParameterValue", new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 11 }));
    await expectError(
      "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
      new SendMessageBatchCommand({ QueueUrl: url, Entries: Array.from({ length: 11 }, (_, i) => ({ Id: `e${i}`, MessageBody: "x" })) }),
    );
    await expectError("AWS.SimpleQueueService.EmptyBatchRequest", new SendMessageBatchCommand({ QueueUrl: url, Entries: [] }));
    await expectError(
      "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
      new DeleteMessageBatchCommand({ QueueUrl: url, Entries: [{ Id: "a", ReceiptHandle: "x" }, { Id: "a", ReceiptHandle: "y" }] }),
    );
    await expectError("ReceiptHandleIsInvalid", new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: "garbage" }));
    await expectError("ReceiptHandleIsInvalid", new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: "garbage", VisibilityTimeout: 5 }));
  },

  async follower_endpoint() {
    const url = await create("follower");
    const viaTwo = (await call(new GetQueueUrlCommand({ QueueName: qname("follower") }), c2)).QueueUrl;
    check(viaTwo.endsWith(`/${ACCOUNT}/${qname("follower")}`), "GetQueueUrl on node 2", viaTwo);
    await call(new SendMessageCommand({ QueueUrl: url, MessageBody: "via 2", MessageAttributes: { n: RICH.bin } }), c2);
    const [m] = await receiveN(url, 1, { MessageAttributeNames: ["All"], VisibilityTimeout: 60 });
    sameAttributes(m.MessageAttributes, { n: RICH.bin }, "attributes sent on node 2");
    await call(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }), c2);
    await call(new SendMessageCommand({ QueueUrl: viaTwo, MessageBody: "via 1" }));
    const [m2] = await receiveN(viaTwo, 1, {}, c2);
    checkEq(m2.Body, "via 1", "sent on 1, received on 2");
    await call(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m2.ReceiptHandle }));
    await waitFor("the queue is empty on both nodes", async () => (await counters(url)) === "0,0,0");
  },
};

async function main() {
  if (!ENDPOINT) {
    console.error("FERRY_SQS_ENDPOINT is not set (e.g. http://127.0.0.1:9324)");
    return 2;
  }
  const pkg = (await import("@aws-sdk/client-sqs/package.json", { with: { type: "json" } })).default;
  console.log(`node-json: @aws-sdk/client-sqs ${pkg.version}, node ${process.version}, endpoint ${ENDPOINT}, second endpoint ${ENDPOINT_2}, tag ${TAG}`);
  const passed = [];
  const failed = [];
  const suiteStart = Date.now();
  for (const [name, fn] of Object.entries(scenarios)) {
    if (ONLY.size && !ONLY.has(name)) continue;
    const start = Date.now();
    console.log(`--- ${name}`);
    const firstQueue = created.length;
    try {
      await fn();
      passed.push(name);
      console.log(`ok   ${name} (${(Date.now() - start) / 1000}s)`);
    } catch (e) {
      failed.push(name);
      const meta = e.$metadata ? ` $metadata=${JSON.stringify(e.$metadata)} Code=${e.Code}` : "";
      console.log(`FAIL ${name} (${(Date.now() - start) / 1000}s): ${e.name}: ${e.message}${meta}\n    ${String(e.stack).replace(/\n/g, "\n    ")}`);
    }
    // Each queue is a few Raft groups with heartbeats of their own: keep only what is in use.
    for (const url of created.slice(firstQueue)) {
      await call(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
    }
  }
  console.log(`node-json: MD5 digests computed by the SDK: ${md5Digests}`);
  console.log(`node-json: total ${(Date.now() - suiteStart) / 1000}s; failed: ${failed.join(", ") || "none"}`);
  console.log(`node-json: ${passed.length} passed, ${failed.length} failed`);
  return failed.length ? 1 : 0;
}

process.exitCode = await main();
