"""DynamoDB for AWS deployments: one table, partition key `pk`, TTL on `expires_at`.

DynamoDB's TTL deletes expired items only eventually (within days), so reads filter on
`expires_at` too. boto3 is imported when this store is opened, never at cold start
otherwise. The proxy's IAM role needs only GetItem and UpdateItem (last use) on the table;
the operator's `llm-proxy tokens` also needs Scan and DeleteItem (writes use UpdateItem).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from core.stores import Item


class DynamoDBStore:
    blocking = True

    def __init__(
        self, table: str, region: str | None = None, endpoint_url: str | None = None
    ) -> None:
        import boto3  # heavy: only when a DynamoDB store is configured

        self.table = table
        self._client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)

    def get(self, key: str) -> Item | None:
        # Strongly consistent: a revoke must not be read back as still valid.
        reply = self._client.get_item(
            TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True
        )
        raw = reply.get("Item")
        if raw is None:
            return None
        item = _item(raw)
        if item.expires_at is not None and item.expires_at <= time.time():
            return None
        return item

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        # UpdateItem rather than PutItem: it keeps `last_used`.
        names = {"#doc": "doc", "#exp": "expires_at"}
        values: dict[str, Any] = {":doc": {"S": json.dumps(doc)}}
        if expires_at is None:
            expression = "SET #doc = :doc REMOVE #exp"
        else:
            expression = "SET #doc = :doc, #exp = :exp"
            # TTL wants whole epoch seconds; round up so it never deletes early.
            values[":exp"] = {"N": str(int(expires_at) + (expires_at % 1 > 0))}
        self._client.update_item(
            TableName=self.table,
            Key={"pk": {"S": key}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def update(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> bool:
        names = {"#doc": "doc", "#exp": "expires_at"}
        values: dict[str, Any] = {":doc": {"S": json.dumps(doc)}, ":now": {"N": repr(time.time())}}
        if expires_at is None:
            expression = "SET #doc = :doc REMOVE #exp"
        else:
            expression = "SET #doc = :doc, #exp = :exp"
            values[":exp"] = {"N": str(int(expires_at) + (expires_at % 1 > 0))}
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression=expression,
                # Only a document still there: TTL deletes late, so its expiry is read too.
                ConditionExpression="attribute_exists(#doc) AND "
                "(attribute_not_exists(#exp) OR #exp > :now)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def delete(self, key: str) -> bool:
        reply = self._client.delete_item(
            TableName=self.table, Key={"pk": {"S": key}}, ReturnValues="ALL_OLD"
        )
        return "Attributes" in reply

    def scan(self, prefix: str) -> list[Item]:
        items: list[Item] = []
        now = time.time()
        paginator = self._client.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :prefix)",
            ExpressionAttributeValues={":prefix": {"S": prefix}},
            ConsistentRead=True,
        )
        for page in pages:
            for raw in page.get("Items", []):
                if "doc" not in raw:
                    continue  # a counter (see scan_counters), not a document
                item = _item(raw)
                if item.expires_at is None or item.expires_at > now:
                    items.append(item)
        return sorted(items, key=lambda i: i.key)

    def touch(self, key: str, when: float) -> None:
        client = self._client
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression="SET last_used = :when",
                # A revoked (deleted) token must not come back as a bare item.
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":when": {"N": repr(when)}},
            )

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        # ADD is DynamoDB's atomic counter: concurrent instances never lose an update.
        names = {"#exp": "expires_at"}
        values: dict[str, Any] = {":exp": {"N": str(int(expires_at) + 1)}}
        adds = []
        for index, (name, amount) in enumerate(amounts.items()):
            names[f"#c{index}"] = f"c_{name}"
            values[f":a{index}"] = {"N": str(amount)}
            adds.append(f"#c{index} :a{index}")
        expression = "SET #exp = :exp" + (" ADD " + ", ".join(adds) if adds else "")
        reply = self._client.update_item(
            TableName=self.table,
            Key={"pk": {"S": key}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        attributes = reply.get("Attributes", {})
        return {
            name[2:]: int(value["N"])
            for name, value in attributes.items()
            if name.startswith("c_") and "N" in value
        }

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        found = []
        now = time.time()
        paginator = self._client.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :prefix) AND attribute_not_exists(doc)",
            ExpressionAttributeValues={":prefix": {"S": prefix}},
            ConsistentRead=True,
        )
        for page in pages:
            for raw in page.get("Items", []):
                expires_at = _number(raw, "expires_at")
                if expires_at is not None and expires_at <= now:
                    continue  # TTL deletes only eventually
                counters = {
                    name[2:]: int(value["N"])
                    for name, value in raw.items()
                    if name.startswith("c_") and "N" in value
                }
                found.append((raw["pk"]["S"], counters))
        return sorted(found)

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        # The common case is one conditional UpdateItem: the whole amount fits. Near the
        # cap, the room left is read and taken with a condition on the value read, so a
        # concurrent instance that took it first makes this one read again.
        counter = f"c_{name}"
        condition = "attribute_not_exists(#c) OR #c <= :room"
        room = limit - amount
        for _ in range(8):
            if room < 0:
                used = self._counter_value(key, counter)
                if used >= limit:
                    return None
                amount, room = limit - used, used
                condition = "#c = :room" if used else "attribute_not_exists(#c) OR #c = :room"
            try:
                self._client.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": key}},
                    UpdateExpression="SET #exp = :exp ADD #c :a",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#exp": "expires_at", "#c": counter},
                    ExpressionAttributeValues={
                        ":exp": {"N": str(int(expires_at) + 1)},
                        ":a": {"N": str(amount)},
                        ":room": {"N": str(room)},
                    },
                )
                return amount
            except self._client.exceptions.ConditionalCheckFailedException:
                room = -1  # read what is left and try for that
        return None

    def _counter_value(self, key: str, counter: str) -> int:
        reply = self._client.get_item(
            TableName=self.table,
            Key={"pk": {"S": key}},
            ConsistentRead=True,
            ProjectionExpression="#c",
            ExpressionAttributeNames={"#c": counter},
        )
        value = reply.get("Item", {}).get(counter)
        return int(value["N"]) if value else 0


def _number(raw: dict[str, Any], name: str) -> float | None:
    value = raw.get(name)
    return float(Decimal(value["N"])) if value else None


def _item(raw: dict[str, Any]) -> Item:
    return Item(
        key=raw["pk"]["S"],
        doc=json.loads(raw["doc"]["S"]),
        expires_at=_number(raw, "expires_at"),
        last_used=_number(raw, "last_used"),
    )
