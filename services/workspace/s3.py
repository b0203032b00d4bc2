"""The workspace as an object store: ``s3://BUCKET/PREFIX``, on the S3 endpoint of
WORKSPACE_S3_ENDPOINT_URL (default: the delivery's S3_ENDPOINT_URL) and the same credentials."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import StorageFailed
from services.storage import STORAGE_ERRORS, make_s3_client
from services.workspace.base import IncompleteUpload, Readable, StopCheck, StoredObject, never
from services.workspace.keys import JOBS, check_key, folders_of, job_of
from services.workspace.multipart import PART_BYTES, MultipartWriter, storage_failed
from services.workspace.scratch import Scratch
from services.workspace.streams import full_disk_is_transient, stoppable

# One GET per range: a failure costs at most this much again, and memory stays flat.
RANGE_BYTES = 16 * 1024 * 1024
READ_BYTES = 1024 * 1024
DELETE_BATCH = 1000
LIST_PAGE = 1000
# A single CopyObject copies up to 5 GB; larger objects need the managed, multipart copy.
SINGLE_COPY_LIMIT = 5 * 1024**3
# How long a presigned URL handed to ffprobe stays valid: well beyond the probe's own timeout.
READABLE_SECONDS = 300


class S3Workspace:
    def __init__(self, client: Any, bucket: str, prefix: str = "", scratch: Scratch | None = None) -> None:
        self.client, self.bucket = client, bucket
        self.base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.base}"
        # Where writers spool their parts: this process's own scratch.
        self.scratch = scratch or Scratch()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, bucket: str, prefix: str, timeout: float = 60.0, attempts: int = 5
    ) -> S3Workspace:
        endpoint = settings.workspace_s3_endpoint_url or settings.s3_endpoint_url
        # Body checksums and payload hashes cost CPU on every byte of every part (the API's
        # upload MB/s), and some S3 servers refuse CRC32s on multipart uploads; the store is
        # ours, on a network we trust, and TCP already checks what crosses it.
        client = make_s3_client(
            settings, endpoint_url=endpoint, body_checks=False, timeout=timeout, attempts=attempts
        )
        return cls(client, bucket, prefix, Scratch(settings.scratch_dir))

    def _name(self, key: str) -> str:
        return self.base + check_key(key)

    def _key(self, name: str) -> str:
        return name[len(self.base) :]

    @contextlib.contextmanager
    def _errors(self, doing: str, *, missing: str = "the workspace holds no such object") -> Iterator[None]:
        try:
            yield
        except STORAGE_ERRORS as exc:
            raise storage_failed(exc, doing, self.bucket, missing) from exc

    # -- writing -------------------------------------------------------------------------------

    def open_writer(self, key: str, *, should_stop: StopCheck = never) -> MultipartWriter:
        return MultipartWriter(
            self.client,
            self.bucket,
            self._name(key),
            key,
            spool_in=self.scratch.root,
            should_stop=should_stop,
            describe=self.url,
        )

    def put_file(self, path: Path, key: str, *, should_stop: StopCheck = never) -> None:
        size = path.stat().st_size
        if size <= PART_BYTES:
            with self._errors(f"Writing {key}"):
                self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=path.read_bytes())
            return
        with self.open_writer(key, should_stop=should_stop) as writer, path.open("rb") as source:
            while block := source.read(PART_BYTES):
                writer.write(block)

    # -- reading -------------------------------------------------------------------------------

    def _ranges(self, name: str, size: int, etag: str) -> Iterator[bytes]:
        for start in range(0, size, RANGE_BYTES):
            end = min(start + RANGE_BYTES, size) - 1
            body = self.client.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end}", IfMatch=etag
            )["Body"]
            yield from body.iter_chunks(READ_BYTES)

    def get_file(self, key: str, dest: Path, *, should_stop: StopCheck = never) -> Path:
        name = self._name(key)
        with self._errors(f"Reading {key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=name)
            size, etag = int(head["ContentLength"]), head["ETag"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with full_disk_is_transient("The scratch folder"), dest.open("wb") as out:
                for chunk in stoppable(self._ranges(name, size, etag), should_stop, what=f"Reading {key}"):
                    out.write(chunk)
                written = out.tell()
        if written != size:
            raise StorageFailed(f"Reading {key} ended at byte {written} of {size}.")
        return dest

    def readable(self, key: str, dest: Path) -> Readable:
        name = self._name(key)
        with self._errors(f"Reading {key}"):
            size = int(self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"])
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=READABLE_SECONDS
            )
        return Readable(url, size)

    def read_bytes(self, key: str) -> bytes:
        with self._errors(f"Reading {key}"):
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read()
        return data

    def objects(self, prefix: str) -> list[StoredObject]:
        found = []
        with self._errors(f"Listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._name(prefix)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        found.append(StoredObject(self._key(item["Key"]), item["Size"], item["LastModified"]))
        return found

    def exists(self, prefix: str) -> bool:
        with self._errors(f"Listing {prefix}"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._name(prefix), MaxKeys=10)
        return any(not item["Key"].endswith("/") for item in page.get("Contents", []))

    # -- removing ------------------------------------------------------------------------------

    def remove(self, prefix: str) -> int:
        keys = [stored.key for stored in self.objects(prefix)]
        names = [self._name(key) for key in keys]
        if prefix.endswith("/"):
            names += [self._name(folder) for folder in folders_of(keys, prefix)]
        with self._errors(f"Removing {prefix}"):
            for start in range(0, len(names), DELETE_BATCH):
                batch = [{"Key": name} for name in names[start : start + DELETE_BATCH]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def job_prefixes(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{self.base}{JOBS}/", "Delimiter": "/"}
        if after is not None:
            # "jobs/<id>0" sorts after every key under "jobs/<id>/" ('/' < '0') and before the
            # next job's, so the listing resumes at the next job, not inside this one.
            params["StartAfter"] = f"{self.base}{JOBS}/{after}0"
        found: list[uuid.UUID] = []
        with self._errors("Listing the workspace's jobs"):
            while len(found) < limit:
                page = self.client.list_objects_v2(**params, MaxKeys=min(LIST_PAGE, limit - len(found)))
                for common in page.get("CommonPrefixes", []):
                    job = job_of(self._key(common["Prefix"]))
                    if job is not None:
                        found.append(job)
                if not page.get("IsTruncated"):
                    break
                params["ContinuationToken"] = page["NextContinuationToken"]
        return found[:limit]

    def incomplete_uploads(self) -> list[IncompleteUpload]:
        found = []
        with self._errors("Listing incomplete uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.base
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    found.append(
                        IncompleteUpload(self._key(upload["Key"]), upload["Initiated"], upload["UploadId"])
                    )
        return found

    def abort_upload(self, upload: IncompleteUpload) -> None:
        with self._errors(f"Aborting the upload of {upload.key}"):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._name(upload.key), UploadId=upload.upload_id
            )

    def check(self) -> None:
        missing = f"the workspace bucket {self.bucket!r} does not exist"
        with self._errors("Reaching the workspace", missing=missing):
            self.client.head_bucket(Bucket=self.bucket)

    # -- publishing ----------------------------------------------------------------------------

    def same_store(self, client: Any) -> bool:
        return bool(client.meta.endpoint_url == self.client.meta.endpoint_url)

    def export(
        self, stored: StoredObject, client: Any, bucket: str, dest_key: str, extra: dict[str, str]
    ) -> None:
        source = {"Bucket": self.bucket, "Key": self._name(stored.key)}
        with self._errors(f"Publishing {stored.key}"):
            if not self.same_store(client):
                body = self.client.get_object(**source)["Body"]
                client.upload_fileobj(body, bucket, dest_key, ExtraArgs=extra)
            elif stored.size <= SINGLE_COPY_LIMIT:
                client.copy_object(
                    Bucket=bucket, Key=dest_key, CopySource=source, MetadataDirective="REPLACE", **extra
                )
            else:
                client.copy(source, bucket, dest_key, ExtraArgs=extra | {"MetadataDirective": "REPLACE"})
