from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest

from receiver.cli import main
from tests.e2e.conftest import API_TOKEN, deployment, wait_until

RULES = Path(__file__).parents[2] / "rules.example.toml"


def test_rules_check_accepts_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(RULES)], {}) == 0
    assert capsys.readouterr().out.strip() == "rules.example.toml: 2 rules, max_depth 2"


def test_rules_check_names_the_rule_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "extend-first"\non = "job.succeeded"\nextend.index = 7\n')
    assert main(["rules", "check", str(bad)], {}) == 2
    err = capsys.readouterr().err
    assert 'rules.toml: rule "extend-first": extend.index' in err and "7" in err


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REELHOOK_PUBLIC_URL": "ftp://x"}, "REELHOOK_PUBLIC_URL must be an http(s) URL"),
        ({"REELHOOK_TTAPI_API_KEY": "k"}, "REELHOOK_PUBLIC_URL is http://127.0.0.1:8000, which a real provider"),
        ({"REELHOOK_RULES": "/nonexistent/rules.toml"}, "REELHOOK_RULES: no such file"),
        ({"REELHOOK_ALLOW_PRIVATE_URLS": "maybe"}, "REELHOOK_ALLOW_PRIVATE_URLS must be 1 or 0"),
        ({"REELHOOK_SECRET": "short"}, "REELHOOK_SECRET: each secret must be at least 16 characters"),
        (
            {"REELHOOK_APIMART_API_KEY": "k", "REELHOOK_PUBLIC_URL": "https://hooks.example:8443"},
            "APIMart only calls back on ports 80 and 443",
        ),
        ({"REELHOOK_NOTIFY_SECRET": "not-a-secret"}, "REELHOOK_NOTIFY_SECRET must be whsec_"),
        ({"REELHOOK_METRICS_ADDR": "9464"}, "REELHOOK_METRICS_ADDR must be host:port"),
        ({"REELHOOK_WAVESPEED_MAX_IN_FLIGHT": "0"}, "REELHOOK_WAVESPEED_MAX_IN_FLIGHT must be a whole number above 0"),
    ],
)
def test_serve_refuses_a_wrong_setting_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], env: dict[str, str], needle: str
) -> None:
    assert main(["serve", "--port", "0"], {"REELHOOK_DATA_DIR": str(tmp_path)} | env) == 2
    assert needle in capsys.readouterr().err


def test_serve_refuses_an_invalid_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "x"\non = "job.succeeded"\nextnd.index = 0\n')
    env = {"REELHOOK_DATA_DIR": str(tmp_path), "REELHOOK_RULES": str(bad)}
    assert main(["serve", "--port", "0"], env) == 2
    assert 'rules.toml: rule "x": unknown key "extnd"' in capsys.readouterr().err


@pytest.mark.anyio
async def test_client_commands_talk_to_a_running_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with deployment(tmp_path) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}

        async def cli(*argv: str) -> tuple[int, str, str]:
            code = await anyio.to_thread.run_sync(main, list(argv), env)
            out, err = capsys.readouterr()
            return code, out, err

        code, out, _ = await cli("submit", "--prompt", "a fox", "--image-url", "https://img.example/a.png", "--json")
        assert code == 0
        job_id = json.loads(out)["id"]

        async def done() -> bool:
            return (await cli("show", job_id, "--json"))[1].count('"downloaded"') == 4

        await wait_until(done)
        code, out, _ = await cli("extend", job_id, "--index", "1", "--json")
        assert code == 0 and json.loads(out)["parent_id"] == job_id
        code, out, _ = await cli("jobs")
        assert code == 0 and job_id in out and len(out.strip().splitlines()) == 2
        code, out, _ = await cli("show", job_id)
        assert code == 0 and out.startswith(f"job {job_id}: succeeded") and out.count("file ") == 4

        code, _, err = await cli("extend", job_id, "--index", "9")
        assert code == 1 and "index must be 0-3" in err
        bad_token = env | {"REELHOOK_API_TOKEN": "wrong"}
        assert await anyio.to_thread.run_sync(main, ["jobs"], bad_token) == 1
        assert "401 unauthorized" in capsys.readouterr().err


@pytest.mark.anyio
async def test_every_action_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "frame.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels")
    async with deployment(tmp_path) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}

        async def cli(*argv: str) -> dict[str, object]:
            code = await anyio.to_thread.run_sync(main, [*argv, "--json"], env)
            out, err = capsys.readouterr()
            assert code == 0, err
            return dict(json.loads(out))

        async def succeeded(job_id: str) -> bool:
            return (await deployed.job(job_id))["status"] == "succeeded"

        imagine = await cli("imagine", "--prompt", "a fox", "--option", "mode=relax")
        await wait_until(lambda: succeeded(str(imagine["id"])))
        imagine_provider_id = (await deployed.job(str(imagine["id"])))["provider_job_id"]
        upscale = await cli("action", str(imagine["id"]), "upsample1")
        seed = await cli("seed", str(imagine["id"]))
        describe = await cli("describe", "--image", str(png))
        blend = await cli("blend", "--image", str(png), "--image", str(png), "--dimensions", "SQUARE")
        wave = await cli("submit", "--provider", "wavespeed", "--prompt", "p", "--image-url", "https://i.example/a.png",
                         "--option", "aspect_ratio=16:9", "--option", "seed=42")  # fmt: skip
        imagine_task = deployed.sims["apimart"].add_imagine()  # type: ignore[attr-defined]
        animate = await cli("submit", "--provider", "apimart", "--task-id", imagine_task, "--index", "2")
        for job in (upscale, seed, describe, blend, wave, animate):
            await wait_until(lambda job=job: succeeded(str(job["id"])))  # type: ignore[misc]

        # What each job returned that a user acts on: `show` prints it, `show --json` has it under "result".
        shown = {name: await cli("show", str(job["id"])) for name, job in [("imagine", imagine), ("seed", seed),
                 ("describe", describe), ("upscale", upscale)]}  # fmt: skip
        assert str(shown["seed"]["result"]["seed"]).isdigit()  # type: ignore[index]
        assert shown["describe"]["result"]["prompts"] == [  # type: ignore[index]
            f"a described picture, take {i} --ar 1:1" for i in range(1, 5)
        ]
        assert shown["imagine"]["result"]["actions"][:2] == ["upsample1", "upsample2"]  # type: ignore[index]
        assert str(shown["imagine"]["result"]["cover_url"]).endswith("/4.png")  # type: ignore[index]
        assert "zoom_out_2" in shown["upscale"]["result"]["actions"]  # type: ignore[index]  # an upscale's buttons

        async def show(job_id: object) -> str:
            code = await anyio.to_thread.run_sync(main, ["show", str(job_id)], env)
            out, err = capsys.readouterr()
            assert code == 0, err
            return out

        assert f"  seed: {shown['seed']['result']['seed']}\n" in await show(seed["id"])  # type: ignore[index]
        described = await show(describe["id"])
        assert "  prompt 1: a described picture, take 1 --ar 1:1\n" in described
        assert "  prompt 4: a described picture, take 4 --ar 1:1\n" in described
        grid = await show(imagine["id"])
        actions = "upsample1, upsample2, upsample3, upsample4, variation1, variation2, variation3, variation4"
        assert f"  actions: {actions}  (reelhook action {imagine['id']} NAME)\n" in grid
        assert f"  cover: {shown['imagine']['result']['cover_url']}\n" in grid  # type: ignore[index]

    tt = {s.path.rsplit("/", 1)[1]: s.body for s in deployed.sims["ttapi"].submissions if s.status_code == 200}
    assert tt["imagine"]["mode"] == "relax" and tt["action"]["action"] == "upsample1"
    assert tt["seed"]["jobId"] == tt["action"]["jobId"] == imagine_provider_id
    png_b64 = base64.b64encode(png.read_bytes()).decode()
    assert tt["describe"]["base64"] == png_b64 and tt["blend"]["imgBase64Array"] == [png_b64, png_b64]
    [ws] = [s.body for s in deployed.sims["wavespeed"].submissions if s.status_code == 200]
    assert (ws["aspect_ratio"], ws["seed"]) == ("16:9", 42)
    [am] = [s.body for s in deployed.sims["apimart"].submissions if s.status_code == 200]
    assert (am["task_id"], am["index"]) == (imagine_task, 2)
