from __future__ import annotations

import base64
import json
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

import anyio
import httpx
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
        (  # given, a local URL is refused for a real provider (not given, the tunnel agent is asked)
            {"REELHOOK_TTAPI_API_KEY": "k", "REELHOOK_PUBLIC_URL": "http://127.0.0.1:8000"},
            "REELHOOK_PUBLIC_URL is http://127.0.0.1:8000, which a real provider",
        ),
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
        assert "  cost: 30 quota" in out.splitlines()  # the simulator's `"quota": "30"`, as TTAPI reports it
        # Each file as a signed link to the server, which opens it from anywhere (never a path on its disk).
        links = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("file ")]
        assert all(link.startswith(f"{deployed.url}/media/") and "?sig=" in link for link in links), links
        async with httpx.AsyncClient() as anyone:
            assert (await anyone.get(links[0])).content[4:8] == b"ftyp"

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


# -- CLI habits: --version, --json everywhere (errors too), --server/--token, paging, id prefixes, completion --------


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"], {})
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"reelhook {metadata.version('reelhook')}\n"


def test_rules_check_json_and_its_errors_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(RULES), "--json"], {}) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"file": str(RULES), "rules": ["extend-first", "extend-again"], "max_depth": 2}
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "extend-first"\non = "job.succeeded"\nextend.index = 7\n')
    assert main(["rules", "check", str(bad), "--json"], {}) == 2
    out, err = capsys.readouterr()
    failure = json.loads(err)
    assert (
        out == "" and failure["error"] == "invalid_rules" and 'rule "extend-first": extend.index' in failure["detail"]
    )
    assert (
        main(["serve", "--port", "0", "--json"], {"REELHOOK_DATA_DIR": str(tmp_path), "REELHOOK_SECRET": "short"}) == 2
    )
    assert json.loads(capsys.readouterr().err)["error"] == "invalid_setting"


def test_a_usage_error_is_json_under_json_and_argparse_text_without(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "--limit", "many", "--json"], {}) == 2
    assert json.loads(capsys.readouterr().err) == {
        "error": "usage",
        "detail": "argument --limit: invalid int value: 'many'",
    }
    assert main(["jobs", "--limit", "many"], {}) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("usage: reelhook jobs ") and "reelhook jobs: error: argument --limit: invalid int value" in err
    )


def complete(script: str, *words: str) -> list[str]:
    """What tab offers after `words` (the last one is the word being completed), from the bash script itself."""
    line = " ".join(shlex.quote(word) for word in words)
    probe = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _reelhook; printf "%s\\n" "${{COMPREPLY[@]}}"'
    return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_completion_scripts_offer_commands_options_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"], {}) == 0
    script = capsys.readouterr().out
    assert sorted(complete(script, "reelhook", "re")) == ["reconcile", "resume", "retry"]
    assert set(complete(script, "reelhook", "")) >= {"serve", "jobs", "show", "rules", "completion", "--version"}
    assert complete(script, "reelhook", "jobs", "--c") == ["--cursor"]
    assert complete(script, "reelhook", "show", "abc", "--s") == ["--server"]
    assert complete(script, "reelhook", "jobs", "--status", "s") == ["submitted", "succeeded"]
    assert complete(script, "reelhook", "extend", "--motion", "") == ["low", "high"]
    assert complete(script, "reelhook", "rules", "") == ["check", "--help"]
    assert complete(script, "reelhook", "rules", "check", "--j") == ["--json"]
    assert complete(script, "reelhook", "completion", "") == ["bash", "zsh"]
    assert main(["completion", "zsh"], {}) == 0
    zsh = capsys.readouterr().out
    assert "bashcompinit" in zsh and "complete -o filenames -F _reelhook reelhook" in zsh


@pytest.mark.anyio
async def test_flags_401_paging_prefixes_and_json_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other-server"
    other.mkdir()
    (other / "api-token").write_text("another-servers-token\n")
    async with deployment(tmp_path) as deployed:

        async def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
            code = await anyio.to_thread.run_sync(main, list(argv), {} if env is None else env)
            out, err = capsys.readouterr()
            return code, out, err

        flags = ("--server", deployed.url, "--token", API_TOKEN)
        ids = []
        for n in range(3):
            code, out, err = await cli("submit", "--prompt", f"fox {n}", "--image-url", "https://i.example/a.png",
                                       "--json", *flags)  # fmt: skip
            assert code == 0, err
            ids.append(json.loads(out)["id"])

        # --server and --token win over the environment.
        wrong = {"REELHOOK_SERVER_URL": "http://127.0.0.1:9", "REELHOOK_API_TOKEN": "wrong"}
        code, out, _ = await cli("show", ids[0], "--json", *flags, env=wrong)
        assert code == 0 and json.loads(out)["id"] == ids[0]

        # A refused token says where it came from and where the server's is.
        code, _, err = await cli("jobs", env={"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_DATA_DIR": str(other)})
        assert code == 1 and err.startswith(
            f"reelhook: 401 unauthorized: the token from {other}/api-token was refused by {deployed.url}; "
            "pass --token or set REELHOOK_API_TOKEN (the server's token is in its data dir's api-token)"
        )
        code, _, err = await cli("jobs", "--server", deployed.url, "--token", "nope", env={"REELHOOK_API_TOKEN": "x"})
        assert code == 1 and "the token from --token was refused" in err
        code, out, err = await cli(
            "jobs", "--json", env={"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": "x"}
        )
        failure = json.loads(err)
        assert code == 1 and out == "" and failure["error"] == "unauthorized"
        assert failure["detail"].startswith("the token from REELHOOK_API_TOKEN was refused")

        # An API error under --json is the API's {"error", "detail"}; without, today's text.
        code, out, err = await cli("show", "0123456789", "--json", *flags)
        assert code == 1 and out == "" and json.loads(err) == {"error": "not_found", "detail": "no job 0123456789"}
        code, _, err = await cli("show", "0123456789", *flags)
        assert code == 1 and err == "reelhook: 404 not_found: no job 0123456789\n"

        # Paging: a page and its cursor, the next page from the cursor, or every page.
        code, out, _ = await cli("jobs", "--limit", "2", "--json", *flags)
        first = json.loads(out)
        assert code == 0 and [job["id"] for job in first["jobs"]] == ids[:0:-1] and first["next_cursor"]
        code, out, _ = await cli("jobs", "--limit", "2", "--cursor", first["next_cursor"], "--json", *flags)
        assert code == 0 and json.loads(out) == {"jobs": json.loads(out)["jobs"], "next_cursor": None}
        assert [job["id"] for job in json.loads(out)["jobs"]] == ids[:1]
        code, out, _ = await cli("jobs", "--limit", "1", "--all", "--json", *flags)
        assert code == 0 and [job["id"] for job in json.loads(out)["jobs"]] == ids[::-1]
        code, out, err = await cli("jobs", "--limit", "2", *flags)
        assert code == 0 and len(out.splitlines()) == 2 and f"--cursor {first['next_cursor']}" in err

        # A unique prefix is as good as the id.
        code, out, _ = await cli("show", ids[1][:8], *flags)
        assert code == 0 and out.startswith(f"job {ids[1]}: ")
        code, _, err = await cli("show", ids[1][:5], *flags)
        assert code == 1 and f"no job {ids[1][:5]}" in err
        code, out, err = await cli("watch", ids[0][:8], "--timeout", "30", "--json", *flags)
        assert code == 0 and json.loads(out)["id"] == ids[0], err
