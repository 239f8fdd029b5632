"""A minimal SQS JSON-protocol (awsJson1_0) client over raw HTTP with hard timeouts.

Every call returns (outcome, body_or_error) where outcome is
  "ok"   - HTTP 200, the operation happened;
  "fail" - it certainly did not happen (connection refused, 4xx, 503 ServiceUnavailable);
  "info" - unknown (timeout, reset after the request was sent, 500/other 5xx)."""
import http.client
import json
import socket

ACCOUNT = "000000000000"


class SqsClient:
    def __init__(self, host, port, timeout=15.0, connect_timeout=3.0):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def queue_url(self, name):
        return f"http://{self.host}:{self.port}/{ACCOUNT}/{name}"

    def call(self, action, payload, timeout=None):
        body = json.dumps(payload).encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        sent = False
        try:
            try:
                conn.connect()
            except OSError as e:
                return "fail", {"code": "ConnectError", "message": str(e)}
            conn.sock.settimeout(timeout or self.timeout)
            try:
                conn.request("POST", "/", body=body, headers={
                    "Content-Type": "application/x-amz-json-1.0",
                    "X-Amz-Target": f"AmazonSQS.{action}",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=jepsen/20260101/us-east-1/sqs/aws4_request, "
                                     "SignedHeaders=host, Signature=00",
                })
                sent = True
                resp = conn.getresponse()
                data = resp.read()
            except (socket.timeout, TimeoutError) as e:
                return "info", {"code": "Timeout", "message": str(e)}
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                return ("info" if sent else "fail"), {"code": type(e).__name__, "message": str(e)}
            if resp.status == 200:
                try:
                    return "ok", (json.loads(data) if data.strip() else {})
                except ValueError:
                    return "info", {"code": "BadJson", "message": data[:200].decode("utf-8", "replace")}
            try:
                err = json.loads(data)
            except ValueError:
                err = {}
            code = str(err.get("__type", "")).split("#")[-1] or f"HTTP{resp.status}"
            msg = err.get("message", err.get("Message", ""))
            qe = resp.getheader("x-amzn-query-error")
            e = {"code": code, "status": resp.status, "message": msg}
            if qe:
                e["query_error"] = qe
            if resp.status == 503 or 400 <= resp.status < 500:
                return "fail", e
            return "info", e
        finally:
            conn.close()
