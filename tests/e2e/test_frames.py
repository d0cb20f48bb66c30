"""An uploaded frame reaches each provider in a form it takes: a URL under reelhook's public URL, signed, that a
plain GET from outside (what the provider does) answers with exactly the uploaded bytes; real uvicorn on loopback."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import deployment, wait_until

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"start frame" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"end frame" * 40

# provider -> (where its request carries the start frame, and the end frame, or None where it takes none)
FIELDS: dict[str, tuple[Any, Any]] = {
    "ttapi": (lambda body: body["imageUrl"], lambda body: body["endingUrl"]),
    "acedata": (lambda body: body["image_url"], lambda body: body["end_image_url"]),
    "wavespeed": (lambda body: body["image"], None),
    "apimart": (lambda body: body["image_urls"][0], lambda body: body["end_url"]),
}


@pytest.mark.parametrize("provider", list(FIELDS))
async def test_each_provider_is_sent_a_signed_url_it_can_fetch(tmp_path: Any, provider: str) -> None:
    async with deployment(tmp_path) as deployed:
        start = (await deployed.api.post("/api/frames", content=PNG)).json()["frame"]
        end = (await deployed.api.post("/api/frames", content=JPEG)).json()["frame"]
        start_of, end_of = FIELDS[provider]
        body = {"provider": provider, "prompt": "a fox", "image_url": start}
        if end_of is not None:
            body["end_image_url"] = end
        created = await deployed.api.post("/api/jobs", json=body)
        assert created.status_code == 201, created.text
        sim = deployed.sims[provider]

        async def taken() -> bool:
            return any(s.status_code == 200 and s.body for s in sim.submissions)

        await wait_until(taken)
        sent = next(s.body for s in sim.submissions if s.status_code == 200)
        async with httpx.AsyncClient() as provider_side:  # no token: the provider has only the URL
            for url_of, data, kind in ((start_of, PNG, "png"), (end_of, JPEG, "jpg")):
                if url_of is None:
                    continue
                url = url_of(sent)
                assert url.startswith(f"{deployed.url}/frames/{hashlib.sha256(data).hexdigest()}.{kind}?sig=")
                fetched = await provider_side.get(url)
                assert (fetched.status_code, fetched.content) == (200, data)


async def test_a_data_url_goes_as_it_is_to_apimart_and_is_refused_for_the_others(tmp_path: Any) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    async with deployment(tmp_path) as deployed:
        for provider in ("ttapi", "acedata", "wavespeed"):
            body = {"provider": provider, "prompt": "a fox", "image_url": data_url}
            refused = await deployed.api.post("/api/jobs", json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["detail"].startswith(f"image_url: {provider} takes frames by http(s) URL")
        created = await deployed.api.post(
            "/api/jobs", json={"provider": "apimart", "prompt": "a fox", "image_url": data_url}
        )
        assert created.status_code == 201, created.text
        sim = deployed.sims["apimart"]

        async def taken() -> bool:
            return any(s.status_code == 200 for s in sim.submissions)

        await wait_until(taken)
        assert next(s.body for s in sim.submissions if s.status_code == 200)["image_urls"] == [data_url]
        assert all(deployed.sims[name].submissions == [] for name in ("ttapi", "acedata", "wavespeed"))
