"""`tidings completion bash|zsh|fish`: click's completion script for the shell."""

from __future__ import annotations

from typing import Final

import click
from click.shell_completion import get_completion_class

#: The environment variable click's completion scripts call `tidings` with.
COMPLETE_VAR: Final = "_TIDINGS_COMPLETE"
SHELLS: Final = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (commands, options, choices).

    \b
    Install it for every user (then open a new shell):
      bash:  tidings completion bash > /etc/bash_completion.d/tidings
      zsh:   tidings completion zsh > /usr/local/share/zsh/site-functions/_tidings
      fish:  tidings completion fish > /etc/fish/completions/tidings.fish
    or for yourself only, in ~/.bashrc or ~/.zshrc:
      eval "$(tidings completion bash)"      (zsh: completion zsh)
    or in fish: tidings completion fish > ~/.config/fish/completions/tidings.fish
    """
    complete = get_completion_class(shell)
    assert complete is not None  # click ships all three
    click.echo(complete(ctx.find_root().command, {}, "tidings", COMPLETE_VAR).source())
