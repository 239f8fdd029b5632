#!/usr/bin/env bash
# Ferry's SQS endpoint driven by the AWS CLI v1 (current release, AWS JSON 1.0), exactly as a user
# would type it: `aws --endpoint-url ... sqs <command> --output json`.
#
#   FERRY_SQS_ENDPOINT     http://host:port of the node the suite talks to (required)
#   FERRY_SQS_ENDPOINT_2   a second node, for the follower scenario (default: the first)
#   FERRY_AWS_CLI          the `aws` executable (default: .venv-clients/current/bin/aws)
#   FERRY_SQS_ACCOUNT      the account id expected in queue URLs and ARNs (default 000000000000)
#   FERRY_SUITE_ONLY       comma-separated scenario names to run (optional)
#   FERRY_CLI_JOBS         scenarios run at once (default 2; the long poll always runs alone)
#
# JSON output is checked with python3. The AWS CLI v1 sends a Binary attribute given in JSON as the
# UTF-8 bytes of the string, so the CLI's binary values use bytes 0x00-0x7F (the Python and Node
# suites cover 0x00-0xFF). The last line is `cli-json: N passed, N failed`; the exit status is 0
# only if every scenario passed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
ENDPOINT=${FERRY_SQS_ENDPOINT:-}
ENDPOINT=${ENDPOINT%/}
ENDPOINT_2=${FERRY_SQS_ENDPOINT_2:-$ENDPOINT}
ENDPOINT_2=${ENDPOINT_2%/}
AWS=${FERRY_AWS_CLI:-$repo/.venv-clients/current/bin/aws}
ACCOUNT=${FERRY_SQS_ACCOUNT:-000000000000}
PY=${FERRY_SUITE_PYTHON:-python3}
MIB=1048576
TAG=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')

if [[ -z $ENDPOINT ]]; then
    echo "FERRY_SQS_ENDPOINT is not set (e.g. http://127.0.0.1:9324)" >&2
    exit 2
fi
if [[ ! -x $AWS ]]; then
    echo "the AWS CLI is not at $AWS: run scripts/install-test-clients" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-sqs-cli.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Only what is set here reaches the CLI: no profile, config file or real credentials.
export AWS_ACCESS_KEY_ID=AKIDFERRYTEST AWS_SECRET_ACCESS_KEY=ferry-test-secret
export AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_MAX_ATTEMPTS=5 AWS_RETRY_MODE=standard AWS_PAGER=""
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS

# Only the standard library is needed: -S skips site-packages and makes each start cheaper.
py() { "$PY" -S "$@"; }

# A Python helper for the checks: `check EXPR [what]` evaluates EXPR with `d` = the last output.
cat >"$work/check.py" <<'PY'
import base64, hashlib, json, struct, sys

def md5_attrs(attrs, received=False):
    """MD5OfMessageAttributes. Binary values: the CLI sends a JSON string's UTF-8 bytes and
    prints received values as base64."""
    out = bytearray()
    def put(b):
        out.extend(struct.pack(">I", len(b)))
        out.extend(b)
    for name in sorted(attrs):
        v = attrs[name]
        put(name.encode()); put(v["DataType"].encode())
        if "StringValue" in v:
            out.append(1); put(v["StringValue"].encode())
        else:
            raw = base64.b64decode(v["BinaryValue"]) if received else v["BinaryValue"].encode()
            out.append(2); put(raw)
    return hashlib.md5(bytes(out)).hexdigest()

def md5(s):
    return hashlib.md5(s.encode()).hexdigest()

expr = sys.argv[1]
raw = open(sys.argv[2]).read()
d = json.loads(raw) if raw.strip() else {}
files = {}
for arg in sys.argv[3:]:
    key, path = arg.split("=", 1)
    files[key] = json.loads(open(path).read())
value = eval(expr, {"d": d, "f": files, "md5_attrs": md5_attrs, "md5": md5, "json": json, "b64": base64})
if isinstance(value, bool):
    sys.exit(0 if value else 1)
print(value if isinstance(value, str) else json.dumps(value))
PY

# Each scenario sets its own (see run_scenario).
OUT=$work/out.json
ERR=$work/err.txt
tmp=$work

# fail WHAT: ends the scenario (each runs in a subshell). On stderr, so that it is seen even from
# inside a command substitution.
fail() {
    {
        echo "    FAILED: $*"
        echo "    last stdout: $(head -c 2000 "$OUT")"
        echo "    last stderr: $(head -c 2000 "$ERR")"
    } >&2
    exit 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# run [--endpoint URL] ARGS...: one CLI call (bounded by `timeout`), stdout in $OUT, stderr in $ERR.
run() {
    local endpoint=$ENDPOINT
    if [[ $1 == --endpoint ]]; then
        endpoint=$2
        shift 2
    fi
    timeout 60 "$AWS" --endpoint-url "$endpoint" --output json \
        --cli-connect-timeout 2 --cli-read-timeout 30 sqs "$@" >"$OUT" 2>"$ERR"
}

# ok ARGS...: the call succeeds.
ok() {
    run "$@" || fail "aws sqs $* exited with $?"
}

# fails CODE ARGS...: the call fails with this error code, as the CLI prints it.
fails() {
    local code=$1
    shift
    if run "$@"; then
        fail "aws sqs $*: expected error $code, but it succeeded"
    fi
    grep -qF "An error occurred ($code)" "$ERR" || fail "aws sqs $*: expected error $code"
}

# get EXPR: prints EXPR evaluated on the last output (d). check EXPR WHAT: EXPR must be true.
get() {
    py "$work/check.py" "$1" "$OUT" "${@:2}" || fail "could not evaluate $1"
}
check() {
    local expr=$1 what=$2
    shift 2
    py "$work/check.py" "$expr" "$OUT" "$@" || fail "$what: ($expr) is false"
}
# holds EXPR: whether EXPR is true of the last output, without failing.
holds() {
    py "$work/check.py" "$1" "$OUT" >/dev/null 2>&1
}

qname() { echo "cli-$TAG-$1"; }
create() {
    ok create-queue --queue-name "$(qname "$1")" "${@:2}"
    get 'd["QueueUrl"]' | tee -a "$tmp/created"
}
# receive_n URL N ARGS...: receives until N messages arrived (deadline 20 s); output in $tmp/got.json.
receive_n() {
    local url=$1 n=$2
    shift 2
    echo '[]' >"$tmp/got.json"
    local deadline=$((SECONDS + 20))
    while :; do
        ok receive-message --queue-url "$url" --max-number-of-messages 10 --wait-time-seconds 1 "$@"
        py - "$OUT" "$tmp/got.json" <<'PY'
import json, sys
out = open(sys.argv[1]).read()
got = json.load(open(sys.argv[2]))
got += json.loads(out).get("Messages", []) if out.strip() else []
json.dump(got, open(sys.argv[2], "w"))
PY
        local have
        have=$(py -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$tmp/got.json")
        ((have >= n)) && break
        ((SECONDS < deadline)) || fail "received $have of $n messages within 20 s"
    done
    cp "$tmp/got.json" "$OUT"
    check "len(d) == $n" "exactly $n messages"
}
counters_are() {
    local url=$1 expected=$2 deadline=$((SECONDS + 15))
    while :; do
        ok get-queue-attributes --queue-url "$url" --attribute-names ApproximateNumberOfMessages \
            ApproximateNumberOfMessagesNotVisible ApproximateNumberOfMessagesDelayed
        local now
        now=$(get '",".join(d["Attributes"][k] for k in ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"])')
        [[ $now == "$expected" ]] && return 0
        ((SECONDS < deadline)) || fail "counters are $now, expected $expected"
        sleep 0.2
    done
}

# Attributes of every type; Binary values are text whose UTF-8 bytes are 0x00-0x7F.
cat >"$work/attrs.json" <<'JSON'
{
  "str": {"DataType": "String", "StringValue": "hello wörld ✓ 😀 <&>"},
  "num": {"DataType": "Number", "StringValue": "-12345.678e3"},
  "bin": {"DataType": "Binary", "BinaryValue": "\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u007f"},
  "meta.float": {"DataType": "Number.float", "StringValue": "4563442423554324324264524243.32543234"},
  "meta.custom": {"DataType": "String.custom", "StringValue": "custom label"},
  "meta.gif": {"DataType": "Binary.gif", "BinaryValue": "GIF89a\u0000\u0001"}
}
JSON

# ---------------------------------------------------------------------------------------------
scenario_queue_lifecycle() {
    local u1 u2
    u1=$(create life-1) || exit 1
    u2=$(create life-2) || exit 1
    [[ $u1 == http://*/$ACCOUNT/$(qname life-1) ]] || fail "queue URL form: $u1"
    ok get-queue-url --queue-name "$(qname life-2)"
    check "d['QueueUrl'] == '$u2'" "GetQueueUrl"
    ok list-queues --queue-name-prefix "$(qname life-)"
    check "sorted(d['QueueUrls']) == sorted(['$u1', '$u2'])" "ListQueues by prefix"
    ok delete-queue --queue-url "$u1"
    local deadline=$((SECONDS + 15))
    while :; do
        ok list-queues --queue-name-prefix "$(qname life-)"
        holds "'$u1' not in d.get('QueueUrls', [])" && break
        ((SECONDS < deadline)) || fail "the deleted queue is still listed"
        sleep 0.2
    done
    fails AWS.SimpleQueueService.NonExistentQueue get-queue-url --queue-name "$(qname life-1)"
}

scenario_create_idempotency() {
    local url
    url=$(create idem --attributes VisibilityTimeout=40) || exit 1
    ok create-queue --queue-name "$(qname idem)" --attributes VisibilityTimeout=40
    check "d['QueueUrl'] == '$url'" "same attributes, same URL"
    ok create-queue --queue-name "$(qname idem)"
    check "d['QueueUrl'] == '$url'" "no attributes named, same URL"
    fails QueueAlreadyExists create-queue --queue-name "$(qname idem)" --attributes VisibilityTimeout=41
    fails QueueAlreadyExists create-queue --queue-name "$(qname idem)" --attributes VisibilityTimeout=30
}

scenario_attributes_round_trip() {
    local url
    url=$(create attrs) || exit 1
    ok get-queue-attributes --queue-url "$url" --attribute-names All
    check "d['Attributes']['QueueArn'] == 'arn:aws:sqs:us-east-1:$ACCOUNT:$(qname attrs)'" "QueueArn"
    check "d['Attributes']['MaximumMessageSize'] == '$MIB' and d['Attributes']['VisibilityTimeout'] == '30'" "defaults"
    check "all(d['Attributes'][k] == '0' for k in ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'])" "counters"
    check "int(d['Attributes']['CreatedTimestamp']) < 10**11" "CreatedTimestamp in seconds"
    ok set-queue-attributes --queue-url "$url" \
        --attributes VisibilityTimeout=45,DelaySeconds=3,MessageRetentionPeriod=7200,MaximumMessageSize=2048
    ok get-queue-attributes --queue-url "$url" --attribute-names All
    check "[d['Attributes'][k] for k in ['VisibilityTimeout', 'DelaySeconds', 'MessageRetentionPeriod', 'MaximumMessageSize']] == ['45', '3', '7200', '2048']" "attributes after set"
    fails InvalidAttributeValue set-queue-attributes --queue-url "$url" --attributes DelaySeconds=901
    fails InvalidAttributeName set-queue-attributes --queue-url "$url" --attributes NoSuchAttribute=1
}

scenario_send_receive_attributes() {
    local url body='line1
line2	tab <xml> & "quotes" ünïcödé 😀'
    url=$(create send) || exit 1
    ok send-message --queue-url "$url" --message-body "$body" --message-attributes "file://$work/attrs.json"
    check "d['MD5OfMessageAttributes'] == md5_attrs(f['a'])" "MD5OfMessageAttributes on send" "a=$work/attrs.json"
    printf '%s' "$body" >"$tmp/body.txt"
    check "d['MD5OfMessageBody'] == md5(open('$tmp/body.txt').read())" "MD5OfMessageBody"
    receive_n "$url" 1 --message-attribute-names All --message-system-attribute-names All --visibility-timeout 0
    check "d[0]['Body'] == open('$tmp/body.txt').read()" "body round trip"
    check "{k: v.get('StringValue', v.get('BinaryValue')) for k, v in d[0]['MessageAttributes'].items()} == {k: v.get('StringValue') or b64.b64encode(v['BinaryValue'].encode()).decode() for k, v in f['a'].items()}" "attributes round trip" "a=$work/attrs.json"
    check "d[0]['MD5OfMessageAttributes'] == md5_attrs(d[0]['MessageAttributes'], received=True) == md5_attrs(f['a'])" "MD5OfMessageAttributes on receive" "a=$work/attrs.json"
    check "set(['ApproximateReceiveCount', 'SentTimestamp', 'SenderId', 'ApproximateFirstReceiveTimestamp']) <= set(d[0]['Attributes'])" "system attributes for All"
    check "d[0]['Attributes']['ApproximateReceiveCount'] == '1' and int(d[0]['Attributes']['SentTimestamp']) > 10**12" "receive count 1, SentTimestamp in ms"
    receive_n "$url" 1 --message-attribute-names 'meta.*' --message-system-attribute-names ApproximateReceiveCount SentTimestamp --visibility-timeout 60
    check "sorted(d[0]['MessageAttributes']) == ['meta.custom', 'meta.float', 'meta.gif']" "prefix filter meta.*"
    check "d[0]['MD5OfMessageAttributes'] == md5_attrs(d[0]['MessageAttributes'], received=True)" "MD5 over the filtered attributes"
    check "sorted(d[0]['Attributes']) == ['ApproximateReceiveCount', 'SentTimestamp'] and d[0]['Attributes']['ApproximateReceiveCount'] == '2'" "specific system attributes"
    local handle
    handle=$(get "d[0]['ReceiptHandle']") || exit 1
    ok delete-message --queue-url "$url" --receipt-handle "$handle"
    counters_are "$url" 0,0,0
}

scenario_batch() {
    local url
    url=$(create batch) || exit 1
    py -c '
import json, sys
json.dump([{"Id": f"e_{i}-x", "MessageBody": f"batch {i} ✓",
            "MessageAttributes": {"i": {"DataType": "Number", "StringValue": str(i)},
                                  "s": {"DataType": "String.custom", "StringValue": "v" * (i + 1)}}}
           for i in range(10)], open(sys.argv[1], "w"))' "$tmp/entries.json"
    ok send-message-batch --queue-url "$url" --entries "file://$tmp/entries.json"
    check "len(d['Successful']) == 10 and not d.get('Failed')" "10 successful entries"
    check "all(s['MD5OfMessageAttributes'] == md5_attrs({e['Id']: e for e in f['e']}[s['Id']]['MessageAttributes']) for s in d['Successful'])" "attribute MD5 per entry" "e=$tmp/entries.json"
    receive_n "$url" 10 --message-attribute-names All --visibility-timeout 60
    check "sorted(m['Body'] for m in d) == sorted(e['MessageBody'] for e in f['e'])" "all 10 bodies" "e=$tmp/entries.json"
    get "[{'Id': f'd{i}', 'ReceiptHandle': m['ReceiptHandle']} for i, m in enumerate(d)]" >"$tmp/deletes.json" || exit 1
    ok delete-message-batch --queue-url "$url" --entries "file://$tmp/deletes.json"
    check "len(d['Successful']) == 10 and not d.get('Failed')" "10 deleted"
    counters_are "$url" 0,0,0
}

scenario_visibility() {
    local url first second
    url=$(create vis) || exit 1
    ok send-message-batch --queue-url "$url" --entries Id=a,MessageBody=one Id=b,MessageBody=two
    receive_n "$url" 2 --visibility-timeout 60
    first=$(get "d[0]['ReceiptHandle']") || exit 1
    second=$(get "d[1]['ReceiptHandle']") || exit 1
    ok change-message-visibility --queue-url "$url" --receipt-handle "$first" --visibility-timeout 0
    receive_n "$url" 1 --visibility-timeout 60 --message-system-attribute-names ApproximateReceiveCount
    check "d[0]['Attributes']['ApproximateReceiveCount'] == '2'" "visible again after a change to 0"
    first=$(get "d[0]['ReceiptHandle']") || exit 1
    py -c 'import json, sys; json.dump([{"Id": "c1", "ReceiptHandle": sys.argv[2], "VisibilityTimeout": 0}, {"Id": "c2", "ReceiptHandle": sys.argv[3], "VisibilityTimeout": 0}, {"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 0}], open(sys.argv[1], "w"))' \
        "$tmp/vis.json" "$first" "$second"
    ok change-message-visibility-batch --queue-url "$url" --entries "file://$tmp/vis.json"
    check "sorted(e['Id'] for e in d['Successful']) == ['c1', 'c2']" "batch change succeeded"
    check "[(e['Id'], e['Code'], e['SenderFault']) for e in d['Failed']] == [('bad', 'ReceiptHandleIsInvalid', True)]" "the bad entry failed"
    receive_n "$url" 2 --visibility-timeout 60
}

scenario_long_poll() {
    local url
    url=$(create poll) || exit 1
    local start sent_at end
    start=$(now_ms)
    timeout 60 "$AWS" --endpoint-url "$ENDPOINT" --output json --cli-read-timeout 30 sqs receive-message \
        --queue-url "$url" --wait-time-seconds 10 >"$tmp/poll.json" 2>"$tmp/poll.err" &
    local poller=$!
    sleep 1.5 # the CLI starts (~0.5 s) and its request parks on the server; the point is it returns early
    sent_at=$(now_ms)
    ok send-message --queue-url "$url" --message-body "wake up"
    wait "$poller" || fail "the long poll failed: $(cat "$tmp/poll.err")"
    end=$(now_ms)
    cp "$tmp/poll.json" "$OUT"
    check "[m['Body'] for m in d['Messages']] == ['wake up']" "the long poll got the message"
    echo "    long poll returned $(ms_to_s $((end - sent_at)))s after the send started (waited $(ms_to_s $((end - start)))s)"
    ((end - sent_at < 5000)) || fail "the long poll returned $(ms_to_s $((end - sent_at)))s after the send"
}

scenario_purge() {
    local url
    url=$(create purge) || exit 1
    ok send-message --queue-url "$url" --message-body p
    ok purge-queue --queue-url "$url"
    counters_are "$url" 0,0,0
    fails AWS.SimpleQueueService.PurgeQueueInProgress purge-queue --queue-url "$url"
}

scenario_tags() {
    local url
    url=$(create tags --tags team=ferry,env=test) || exit 1
    ok list-queue-tags --queue-url "$url"
    check "d['Tags'] == {'team': 'ferry', 'env': 'test'}" "tags from create-queue"
    ok tag-queue --queue-url "$url" --tags team=core,tier=1
    ok untag-queue --queue-url "$url" --tag-keys env
    ok list-queue-tags --queue-url "$url"
    check "d['Tags'] == {'team': 'core', 'tier': '1'}" "after tag-queue and untag-queue"
}

scenario_errors() {
    local url missing
    url=$(create errors) || exit 1
    missing=${url%/*}/$(qname missing)
    fails AWS.SimpleQueueService.NonExistentQueue send-message --queue-url "$missing" --message-body x
    fails AWS.SimpleQueueService.NonExistentQueue get-queue-attributes --queue-url "$missing" --attribute-names All
    fails InvalidAttributeValue create-queue --queue-name "$(qname bad)" --attributes VisibilityTimeout=43201
    head -c $((MIB + 1)) /dev/zero | tr '\0' a >"$tmp/big.txt"
    fails InvalidParameterValue send-message --queue-url "$url" --message-body "file://$tmp/big.txt"
    fails InvalidParameterValue receive-message --queue-url "$url" --max-number-of-messages 11
    py -c 'import json, sys; json.dump([{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)], open(sys.argv[1], "w"))' "$tmp/eleven.json"
    fails AWS.SimpleQueueService.TooManyEntriesInBatchRequest send-message-batch --queue-url "$url" --entries "file://$tmp/eleven.json"
    echo '[]' >"$tmp/empty.json"
    fails AWS.SimpleQueueService.EmptyBatchRequest send-message-batch --queue-url "$url" --entries "file://$tmp/empty.json"
    fails AWS.SimpleQueueService.BatchEntryIdsNotDistinct delete-message-batch --queue-url "$url" \
        --entries Id=same,ReceiptHandle=a Id=same,ReceiptHandle=b
    fails ReceiptHandleIsInvalid delete-message --queue-url "$url" --receipt-handle garbage
}

scenario_follower_endpoint() {
    local url
    url=$(create follower) || exit 1
    ok --endpoint "$ENDPOINT_2" get-queue-url --queue-name "$(qname follower)"
    check "d['QueueUrl'].endswith('/$ACCOUNT/$(qname follower)')" "GetQueueUrl on node 2"
    ok --endpoint "$ENDPOINT_2" send-message --queue-url "$url" --message-body "via 2"
    receive_n "$url" 1 --visibility-timeout 60
    check "d[0]['Body'] == 'via 2'" "sent on node 2, received on node 1"
    ok --endpoint "$ENDPOINT_2" delete-message --queue-url "$url" --receipt-handle "$(get "d[0]['ReceiptHandle']")"
    counters_are "$url" 0,0,0
}

# ---------------------------------------------------------------------------------------------
# The long poll runs alone (its timing should not compete for CPU); the other scenarios use their
# own queues, so they run in parallel: each CLI call spends ~0.5 s starting Python.
serial=(long_poll)
parallel=(queue_lifecycle create_idempotency attributes_round_trip send_receive_attributes batch
    visibility purge tags errors follower_endpoint)
selected() { [[ -z ${FERRY_SUITE_ONLY:-} || ,$FERRY_SUITE_ONLY, == *,$1,* ]]; }

# run_scenario NAME: runs it in a subshell with its own scratch files; its log in $work/NAME.log.
run_scenario() {
    local name=$1 start
    start=$(now_ms)
    (
        tmp=$work/$name
        mkdir -p "$tmp"
        OUT=$tmp/out.json
        ERR=$tmp/err.txt
        : >"$OUT"
        : >"$ERR"
        "scenario_$name"
    ) >"$work/$name.log" 2>&1
    local rc=$?
    # Each queue is a few Raft groups with heartbeats of their own: keep only what is in use.
    local url
    while read -r url; do
        OUT=$work/$name/cleanup.json ERR=$work/$name/cleanup.err run delete-queue --queue-url "$url" || true
    done < <(cat "$work/$name/created" 2>/dev/null)
    echo "$rc $(ms_to_s $(($(now_ms) - start)))" >"$work/$name.status"
}

# The wire protocol of the CLI's botocore (newer CLI v1 releases carry their own copy).
protocol=$("$(dirname "$AWS")/python" -c '
try:
    import awscli.botocore.session as s
except ImportError:
    import botocore.session as s
print(s.get_session().get_service_model("sqs").metadata["protocol"])' 2>&1)
echo "cli-json: $("$AWS" --version 2>&1), protocol $protocol, endpoint $ENDPOINT, second endpoint $ENDPOINT_2, tag $TAG"
if [[ $protocol != json ]]; then
    echo "cli-json: expected the AWS CLI to speak SQS over JSON, it speaks $protocol"
    echo "cli-json: 0 passed, 1 failed"
    exit 1
fi
suite_start=$(now_ms)
order=()
for name in "${serial[@]}"; do
    selected "$name" || continue
    order+=("$name")
    run_scenario "$name"
done
# At most JOBS at once: every CLI call is a CPU-heavy Python start, and the cluster under test
# shares the machine (its Raft heartbeats must not starve).
jobs_max=${FERRY_CLI_JOBS:-2}
for name in "${parallel[@]}"; do
    selected "$name" || continue
    order+=("$name")
    while (($(jobs -rp | wc -l) >= jobs_max)); do
        wait -n
    done
    run_scenario "$name" &
done
wait
passed=0
failed=()
for name in "${order[@]}"; do
    echo "--- $name"
    cat "$work/$name.log"
    read -r rc took <"$work/$name.status" || rc=1
    if [[ $rc == 0 ]]; then
        passed=$((passed + 1))
        echo "ok   $name (${took}s)"
    else
        failed+=("$name")
        echo "FAIL $name (${took:-?}s)"
    fi
done
echo "cli-json: total $(ms_to_s $(($(now_ms) - suite_start)))s; failed: ${failed[*]:-none}"
echo "cli-json: $passed passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
