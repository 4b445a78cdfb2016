"""``fsstore workspace``: named groups of sessions, each session with a role
(``create``, ``show``, ``update``, ``ls``, ``rm``, ``add``, ``role``, ``remove``)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ._common import add_command, dumps, plain, store_from, when

if TYPE_CHECKING:
    from ..workspaces import Workspace


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workspace = add_command(
        commands, "workspace", "group sessions into workspaces, each session with a role",
        "fsstore workspace add acme 20261121T055212Z-3fa9c2d1 --role primary",
        description="Group a store's sessions into workspaces: create, show, update, ls, "
                    "rm a workspace; add a session with a role (primary, related, "
                    "reference, or a custom one), change its role, remove it.")
    actions = workspace.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    create = add_command(actions, "create", "create an empty workspace",
                         "fsstore workspace create acme --name 'Acme launch' "
                         "--metadata '{\"team\": \"web\"}'")
    create.add_argument("workspace", metavar="WORKSPACE", help="its id")
    create.add_argument("--name", default=None, help="its name (default: the id)")
    create.add_argument("--description", default="", help="what it is for")
    create.add_argument("--metadata", default=None, type=_json_object, metavar="JSON",
                        help="a JSON object")
    create.set_defaults(run=run_create)

    show = add_command(actions, "show", "describe a workspace and list its sessions",
                       "fsstore workspace show acme --json")
    show.add_argument("workspace", metavar="WORKSPACE")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(run=run_show)

    update = add_command(actions, "update", "change a workspace's name, description or "
                         "metadata", "fsstore workspace update acme --description 'Q3 launch'")
    update.add_argument("workspace", metavar="WORKSPACE")
    update.add_argument("--name", default=None)
    update.add_argument("--description", default=None)
    update.add_argument("--metadata", default=None, type=_json_object, metavar="JSON",
                        help="a JSON object: replaces the metadata whole")
    update.set_defaults(run=run_update)

    ls = add_command(actions, "ls", "list the store's workspaces", "fsstore workspace ls")
    ls.add_argument("--session", default=None, metavar="SESSION",
                    help="only the workspaces this session is in")
    ls.set_defaults(run=run_ls)

    rm = add_command(actions, "rm", "delete a workspace (its sessions are kept)",
                     "fsstore workspace rm acme")
    rm.add_argument("workspace", metavar="WORKSPACE")
    rm.set_defaults(run=run_rm)

    add = add_command(actions, "add", "add a session to a workspace with a role",
                      "fsstore workspace add acme 20261121T055212Z-3fa9c2d1 --role reference")
    add.add_argument("workspace", metavar="WORKSPACE")
    add.add_argument("session", metavar="SESSION")
    add.add_argument("--role", default="related",
                     help="primary, related (the default), reference, or a custom role")
    add.set_defaults(run=run_add)

    role = add_command(actions, "role", "change the role of a session in a workspace",
                       "fsstore workspace role acme 20261121T055212Z-3fa9c2d1 primary")
    role.add_argument("workspace", metavar="WORKSPACE")
    role.add_argument("session", metavar="SESSION")
    role.add_argument("role", metavar="ROLE")
    role.set_defaults(run=run_role)

    remove = add_command(actions, "remove", "remove a session from a workspace (the session "
                         "is kept)", "fsstore workspace remove acme 20261121T055212Z-3fa9c2d1")
    remove.add_argument("workspace", metavar="WORKSPACE")
    remove.add_argument("session", metavar="SESSION")
    remove.set_defaults(run=run_remove)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _print(workspace: Workspace) -> None:
    print(f"{workspace.id}: {plain(workspace.name)}")
    if workspace.description:
        print(f"  {plain(workspace.description)}")
    if workspace.metadata:
        print(f"  metadata {dumps(workspace.metadata, sort_keys=True)}")
    print(f"  created {when(workspace.created)}, updated {when(workspace.updated)}")
    if not workspace.members:
        print("  no sessions")
    for member in workspace.members:
        print(f"  {member.role:<10} {member.session_id}")


def run_create(args: argparse.Namespace) -> int:
    workspace = store_from(args).create_workspace(
        args.workspace, name=args.name, description=args.description, metadata=args.metadata)
    print(f"created workspace {workspace.id} at {workspace.path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    workspace = store_from(args).workspace(args.workspace)
    if args.json:
        print(dumps({"id": workspace.id, "name": workspace.name,
                     "description": workspace.description, "metadata": workspace.metadata,
                     "created": workspace.created, "updated": workspace.updated,
                     "sessions": [{"session": m.session_id, "role": m.role,
                                   "added": m.added} for m in workspace.members]},
                    indent=2, sort_keys=True))
    else:
        _print(workspace)
    return 0


def run_update(args: argparse.Namespace) -> int:
    changes = {key: value for key, value in (
        ("name", args.name), ("description", args.description), ("metadata", args.metadata))
        if value is not None}
    _print(store_from(args).update_workspace(args.workspace, **changes))
    return 0


def run_ls(args: argparse.Namespace) -> int:
    store = store_from(args)
    if args.session is not None:
        found = store.session_workspaces(args.session)
        if not found:
            print(f"session {args.session} is in no workspace")
        for workspace_id, role in found.items():
            print(f"{workspace_id}  {role}")
        return 0
    workspaces = store.list_workspaces()
    if not workspaces:
        print("no workspaces")
        return 0
    width = max(len("WORKSPACE"), *(len(w.id) for w in workspaces))
    print(f"{'WORKSPACE':<{width}}  {'SESSIONS':>8}  {'UPDATED':<16}  NAME")
    for workspace in workspaces:
        print(f"{workspace.id:<{width}}  {len(workspace.members):>8}  "
              f"{when(workspace.updated):<16}  {plain(workspace.name)}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    store_from(args).delete_workspace(args.workspace)
    print(f"deleted workspace {args.workspace}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    store_from(args).add_to_workspace(args.workspace, args.session, args.role)
    print(f"added {args.session} to {args.workspace} as {args.role}")
    return 0


def run_role(args: argparse.Namespace) -> int:
    store_from(args).set_workspace_role(args.workspace, args.session, args.role)
    print(f"{args.session} is {args.role} in {args.workspace}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store_from(args).remove_from_workspace(args.workspace, args.session)
    print(f"removed {args.session} from {args.workspace}")
    return 0
