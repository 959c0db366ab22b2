"""`wonton-hf chat`: non-interactive (--prompt, stdin) and through a pseudo-terminal (line in, streamed reply, /exit)."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from wonton_hf.chat.interactive import ChatSession, SamplingOptions, chat_loop, load_chat_model

# Runs `wonton-hf` as the console script does.
RUNNER = "import sys, wonton_hf.cli as c\nsys.exit(c.main(sys.argv[1:]))\n"
GREEDY = ["--temperature", "0", "--max-new-tokens", "12"]


def wonton_hf(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONIOENCODING": "utf-8"}
    # Bytes, decoded here: `text=True` would turn a "\r" in an (untrained) model's reply into "\n".
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], input=stdin.encode(), capture_output=True, timeout=120, env=env
    )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


@pytest.fixture(scope="module")
def session(saved_chat_model):
    model, tokenizer = load_chat_model(str(saved_chat_model))
    return ChatSession(model, tokenizer, SamplingOptions(temperature=0, max_new_tokens=12))


def test_session_streams_pieces_and_keeps_history(session):
    session.reset()
    pieces = list(session.reply("Wie heißt die Hauptstadt von Deutschland?"))
    assert "".join(pieces).strip() == session.history[-1]["content"]
    assert [m["role"] for m in session.history] == ["user", "assistant"]
    list(session.reply("Und von Frankreich?"))
    prompt = session.tokenizer.decode(session.prompt_ids()[0])
    assert prompt.count("[INST]") == 2 and "Deutschland" in prompt  # the first turn is in the second's context
    assert len(session.history) == 4
    session.reset()
    assert session.history == []


def test_loop_handles_reset_and_exit(session):
    replies = []
    for text in ("hello", "hi again"):  # what the loop should print: each raw reply, after a reset
        session.reset()
        replies.append("".join(session.reply(text)))
    session.reset()
    out = io.StringIO()
    assert (
        chat_loop(session, io.StringIO("hello\n/reset\n\nhi again\n/exit\nnever read\n"), out, interactive=False) == 0
    )
    assert len(session.history) == 2 and session.history[0]["content"] == "hi again"
    # one line per answered turn: the reply to "hello", then the one to "hi again" (replies may hold newlines)
    assert out.getvalue() == "".join(f"{reply}\n" for reply in replies)


def run_in_process(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    import wonton_hf.cli as cli

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prompt_mode_matches_the_library(saved_chat_model, session, monkeypatch, capsys):
    session.reset()
    expected = "".join(session.reply("What is the capital of Italy?")).strip()
    result = wonton_hf("chat", str(saved_chat_model), "--prompt", "What is the capital of Italy?", *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    code, out, _ = run_in_process(
        monkeypatch,
        capsys,
        "chat",
        str(saved_chat_model),
        "--prompt",
        "-",
        *GREEDY,
        stdin="What is the capital of Italy?\n",
    )
    assert code == 0 and out.strip() == expected


def test_stdin_lines_are_turns(saved_chat_model, session):
    result = wonton_hf("chat", str(saved_chat_model), *GREEDY, stdin="first\nsecond\n/exit\nthird\n")
    assert result.returncode == 0, result.stderr
    # exactly two answered turns, the second in the first's context (a reply may itself contain a newline)
    session.reset()
    expected = ["".join(session.reply("first")), "".join(session.reply("second"))]
    assert result.stdout == "".join(f"{reply}\n" for reply in expected) and ">>>" not in result.stdout


def test_user_errors_are_one_line(saved_chat_model, tmp_path, monkeypatch, capsys):
    code, _, err = run_in_process(monkeypatch, capsys, "chat", str(saved_chat_model), "--top-p", "0")
    assert code == 2 and "--top-p" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_in_process(monkeypatch, capsys, "chat", str(tmp_path / "nope"), "--prompt", "x")
    assert code == 2 and "MODEL_DIR" in err


def read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no {marker!r} in {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


def test_interactive_through_a_pseudo_terminal(saved_chat_model):
    controller, terminal = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "chat", str(saved_chat_model), *GREEDY],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    try:
        banner = read_until(controller, b">>> ")
        assert b"/reset" in banner and b"/exit" in banner
        os.write(controller, b"What is the capital of Italy?\n")
        exchange = read_until(controller, b">>> ")
        reply = exchange.split(b"What is the capital of Italy?", 1)[-1].replace(b"\r", b"").strip(b"\n")
        assert reply.endswith(b">>> ") and len(reply) > len(b"\n>>> ")  # a streamed reply, then the next prompt
        os.write(controller, b"/exit\n")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
