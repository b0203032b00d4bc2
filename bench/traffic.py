"""What crossed the S3 API, per bucket, as SeaweedFS counts it (its Prometheus metrics): the
benchmarks' measure of the bytes a job moves in and out of each bucket."""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

METRIC = re.compile(r"^(SeaweedFS_s3_\w+)\{([^}]*)\} ([0-9.e+]+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Traffic:
    """Bytes that crossed the S3 API for one bucket, and its server-side copies."""

    received: float = 0.0
    sent: float = 0.0
    copies: float = 0.0

    def since(self, before: Traffic) -> Traffic:
        return Traffic(self.received - before.received, self.sent - before.sent, self.copies - before.copies)


def bucket_traffic(metrics_url: str) -> dict[str, Traffic]:
    """Bytes received and sent for each bucket so far, and its server-side copies (what
    crossed the S3 API, not what was stored: a copy moves no byte through a client)."""
    text = requests.get(metrics_url, timeout=10).text
    traffic: dict[str, Traffic] = {}
    for line in text.splitlines():
        match = METRIC.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        label = dict(LABEL.findall(labels))
        seen = traffic.setdefault(label.get("bucket", ""), Traffic())
        if name == "SeaweedFS_s3_bucket_traffic_received_bytes_total":
            seen.received += float(value)
        elif name == "SeaweedFS_s3_bucket_traffic_sent_bytes_total":
            seen.sent += float(value)
        elif name == "SeaweedFS_s3_request_total" and label.get("type") == "COPY":
            seen.copies += float(value)
    return traffic
