"""`reelhook completion bash|zsh`: a shell completion script written from the argparse parser itself, so a new
command or option completes without touching this file.

The script is static: tab never starts Python (argcomplete would, and would be one more dependency for a dozen
words). It completes command names, a command's options, an option's choices (`--status`, `--motion`), and files
elsewhere. zsh runs the same function through its `bashcompinit` layer.
"""

from __future__ import annotations

import argparse
import shlex

SHELLS = ["bash", "zsh"]


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (one of SHELLS) covering every command `parser` knows."""
    words: dict[str, list[str]] = {"": [*_subcommands(parser), *_options(parser)]}
    choices: dict[str, list[str]] = {}
    for name, sub in _subcommands(parser).items():
        nested = _subcommands(sub)
        words[name] = [*nested, *_options(sub)]
        for inner, deeper in nested.items():
            words[f"{name} {inner}"] = _options(deeper)
            choices |= _choices(f"{name} {inner}", deeper)
        choices |= _choices(name, sub)
    cases = "\n".join(
        f"        {shlex.quote(key)}) words={shlex.quote(' '.join(value))} ;;" for key, value in words.items()
    )
    option_cases = "\n".join(
        f'        {shlex.quote(key)}) COMPREPLY=($(compgen -W {shlex.quote(" ".join(value))} -- "$cur")); return ;;'
        for key, value in choices.items()
    )
    prelude = "autoload -U +X bashcompinit && bashcompinit\n" if shell == "zsh" else ""
    return f"""# reelhook {shell} completion: eval "$(reelhook completion {shell})"
{prelude}_reelhook() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} command="" word words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        [[ $word == -* ]] && continue
        case "${{command:+$command }}$word" in
{_known(words)}) command="${{command:+$command }}$word" ;;
        esac
    done
    case "$command:$prev" in
{option_cases}
    esac
    case "$command" in
{cases}
    esac
    if [[ $cur == -* || $command == "" || $command == rules || $command == completion ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _reelhook reelhook
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def _choices(command: str, parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    found = {}
    for action in parser._actions:
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            for flag in action.option_strings:
                found[f"{command}:{flag}"] = [str(choice) for choice in action.choices]
            if not action.option_strings:  # a positional with choices, such as `completion SHELL`
                found[f"{command}:{command.split()[-1]}"] = [str(choice) for choice in action.choices]
    return found


def _known(words: dict[str, list[str]]) -> str:
    return "        " + "|".join(shlex.quote(key) for key in words if key)
