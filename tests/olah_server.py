"""Runs olah (a self-hosted Hub mirror) with one correction for local mirrors, then its normal CLI.

olah 0.5.4 answers a request for a file that a local git mirror lacks with 401 RepositoryNotFound, because it falls
through to its (dead) upstream. The Hub answers 404 EntryNotFound there, and clients rely on it: transformers
probes processor_config.json before preprocessor_config.json and gives up on a 401. The wrapper returns the Hub's
404 for such files; everything else is olah's own code.

Usage: python tests/olah_server.py -c configs.toml [olah-cli options]
"""

import sys

import olah.server
import olah.server_file_routes
import olah.server_routes
from olah.errors import error_entry_not_found
from olah.server_access import build_repo_ref
from olah.server_mirror import has_local_mirror


def _entry_not_found_in_mirrors(handler):
    async def wrapped(app, repo_type, org, repo, commit, file_path, request):
        response = await handler(app, repo_type, org, repo, commit, file_path, request)
        if response.status_code == 401 and has_local_mirror(app, build_repo_ref(repo_type, org, repo)):
            return error_entry_not_found()
        return response

    return wrapped


for name in ("file_head_common", "file_get_common"):
    fixed = _entry_not_found_in_mirrors(getattr(olah.server_file_routes, name))
    for module in (olah.server_file_routes, olah.server_routes, olah.server):
        if hasattr(module, name):
            setattr(module, name, fixed)

if __name__ == "__main__":
    sys.argv[0] = "olah-cli"
    sys.exit(olah.server.cli())
