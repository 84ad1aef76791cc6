"""NMI's settings from the manifests that set them: an NMI container's argv and env, the aad-pod-identity
chart's values, nmisim's own command line, and which one wins (issue 19 item 3). Pure: no file IO.

Facts (aad-pod-identity v1.8.17):

- ``cmd/nmi/main.go`` parses its flags with spf13/pflag (not Go's ``flag`` package), with klog's and
  ``pkg/log``'s Go flags added: ``--name=value`` and ``--name value``; a boolean flag given bare is true
  and never takes the next word (``--forceNamespaced false`` is true, ``false`` a positional argument);
  booleans parse with ``strconv.ParseBool``, integers with ``strconv.ParseInt(s, 0, 64)``; the last
  occurrence wins; ``--`` ends the flags; a single dash is a shorthand, and the only one is klog's ``-v``
  (so ``-forceNamespaced`` is ``unknown shorthand flag: 'f'``). An unknown flag or a bad value stops NMI.
- ``FORCENAMESPACED`` in NMI's environment switches namespaced matching on when it is exactly ``true``.
- ``--operation-mode`` is lower-cased; other than standard/managed is fatal, and managed without
  forceNamespaced is fatal (nmi-semantics §2, §4).
- The chart (``charts/aad-pod-identity``, ``templates/nmi-daemonset.yaml``, ``mic-exception.yaml``,
  ``identities.yaml``) turns values into those flags with Go template ``if`` (false, 0, "" and null are
  empty: no flag) and renders values with ``{{ }}``: see :func:`render_chart`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from nmisim.engine.config import MODE_MANAGED, MODE_STANDARD, NMIConfig, SimulationConfig

Kind = Literal["bool", "int", "str"]


class NMISettingsError(ValueError):
    """NMI's settings cannot be read, or NMI would refuse them; ``str()`` is one line for the user."""


@dataclass(frozen=True, slots=True)
class ConfigFlag:
    """One NMI flag that is a simulation setting (an :class:`NMIConfig` field)."""

    name: str
    field: str
    kind: Kind
    help: str


#: NMI's flags that are simulation settings, in NMI's order (``cmd/nmi/main.go``); the CLI's
#: ``serve``, ``evaluate`` and ``request`` define their options from this one list
CONFIG_FLAGS: Final[tuple[ConfigFlag, ...]] = (
    ConfigFlag("forceNamespaced", "force_namespaced", "bool", "namespaced matching (false)"),
    ConfigFlag("MICNamespace", "mic_namespace", "str", "namespace of the isMIC shortcut (default)"),
    ConfigFlag(
        "retry-attempts-for-created",
        "retry_attempts_for_created",
        "int",
        "retries to find the assigned identity in CREATED state (16)",
    ),
    ConfigFlag(
        "retry-attempts-for-assigned",
        "retry_attempts_for_assigned",
        "int",
        "retries to find it in ASSIGNED state (4)",
    ),
    ConfigFlag(
        "find-identity-retry-interval",
        "find_identity_retry_interval_seconds",
        "int",
        "seconds between those retries (5)",
    ),
    ConfigFlag(
        "block-instance-metadata", "block_instance_metadata", "bool", "403 for /metadata/instance (false)"
    ),
    ConfigFlag(
        "metadata-header-required", "metadata_header_required", "bool", "require Metadata: true (true)"
    ),
    ConfigFlag("operation-mode", "operation_mode", "str", "standard or managed (standard)"),
    ConfigFlag(
        "set-retry-after-header",
        "set_retry_after_header",
        "bool",
        "503 + Retry-After: 20 instead of 404 (false)",
    ),
)
FLAG_OF_FIELD: Final = {f.field: f.name for f in CONFIG_FLAGS}
_CONFIG_BY_NAME: Final = {f.name: f for f in CONFIG_FLAGS}

#: NMI's other flags, with klog's and pkg/log's (pflag accepts them; nmisim does not simulate them)
_OTHER_BOOL: Final = frozenset(
    {
        "version",
        "enableProfile",
        "enableScaleFeatures",
        "allow-network-plugin-kubenet",
        "enable-conntrack-deletion",
        "logtostderr",
        "alsologtostderr",
        "add_dir_header",
        "skip_headers",
        "skip_log_headers",
        "one_output",
    }
)
_OTHER_INT: Final = frozenset({"ipt-update-interval-sec", "v", "log_file_max_size"})
_OTHER_STR: Final = frozenset(
    {
        "nmi-listen-address",
        "nmi-port",
        "metadata-ip",
        "metadata-port",
        "node",
        "http-probe-port",
        "prometheus-port",
        "kubelet-config",
        "custom-user-agent",
        "log-format",
        "log_dir",
        "log_file",
        "stderrthreshold",
        "vmodule",
        "log_backtrace_at",
    }
)
_SHORTHANDS: Final = frozenset({"v"})  # pflag's AddGoFlag gives a one-letter Go flag its shorthand


def _kind_of(name: str) -> Kind | None:
    if name in _CONFIG_BY_NAME:
        return _CONFIG_BY_NAME[name].kind
    if name in _OTHER_BOOL:
        return "bool"
    if name in _OTHER_INT:
        return "int"
    if name in _OTHER_STR:
        return "str"
    return None


def go_parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``; None when it fails."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return None


_GO_INT: Final = re.compile(r"[+-]?(0[xX](_?[0-9a-fA-F])+|0[bB](_?[01])+|0[oO]?(_?[0-7])+|[1-9](_?[0-9])*|0)")


def go_parse_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(s, 0, 64)`` (base prefixes, underscores only with a prefix-base rule kept
    simple: between digits); None when it fails or overflows int64."""
    if not _GO_INT.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-").replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1] in "xXbBoO":
        value = int(body, 0)
    elif len(body) > 1 and body[0] == "0":
        value = int(body[1:], 8)
    else:
        value = int(body)
    value *= sign
    return value if -(2**63) <= value < 2**63 else None


@dataclass(frozen=True, slots=True)
class ParsedFlags:
    """What an NMI argv (and env) sets: NMIConfig fields given explicitly, and the rest of the argv."""

    settings: Mapping[str, Any]
    positional: tuple[str, ...] = ()


def _refuse(where: str, message: str) -> NMISettingsError:
    return NMISettingsError(f"{where}: NMI v1.8.17 would not start: {message}")


def _typed(where: str, name: str, kind: Kind, raw: str) -> bool | int | str:
    if kind == "bool":
        b = go_parse_bool(raw)
        if b is None:
            raise _refuse(
                where, f'invalid argument "{raw}" for "--{name}" flag: strconv.ParseBool: parsing "{raw}"'
            )
        return b
    if kind == "int":
        i = go_parse_int(raw)
        if i is None:
            raise _refuse(
                where, f'invalid argument "{raw}" for "--{name}" flag: strconv.ParseInt: parsing "{raw}"'
            )
        return i
    return raw


def parse_nmi_argv(argv: Sequence[str], env: Mapping[str, str], where: str) -> ParsedFlags:
    """NMI's flags (without the program name) as pflag parses them, plus env ``FORCENAMESPACED``.

    Raises :class:`NMISettingsError` where NMI would stop: an unknown flag, a bad value, a missing one.
    """
    settings: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            shown = f"--{name}"
            if not name or name.startswith("-") or name.startswith("="):
                raise _refuse(where, f"bad flag syntax: {arg}")
        else:
            name = arg[1]
            if name not in _SHORTHANDS:
                raise _refuse(where, f"unknown shorthand flag: '{name}' in {arg}")
            rest = arg[2:]
            eq = "=" if rest else ""
            value = rest[1:] if rest.startswith("=") else rest
            shown = f"-{name}"
        kind = _kind_of(name)
        if kind is None:
            raise _refuse(where, f"unknown flag: {shown}")
        if not eq:
            if kind == "bool":
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise _refuse(where, f"flag needs an argument: {shown}")
        typed = _typed(where, name, kind, value)
        flag = _CONFIG_BY_NAME.get(name)
        if flag is not None:
            settings[flag.field] = typed
    if env.get("FORCENAMESPACED") == "true":
        # main.go: *forceNamespaced = *forceNamespaced || "true" == os.Getenv("FORCENAMESPACED")
        settings["force_namespaced"] = True
    return ParsedFlags(settings=settings, positional=tuple(positional))


def nmi_config_of(settings: Mapping[str, Any], where: str) -> NMIConfig:
    """NMI's defaults with ``settings`` applied, refused as NMI refuses it at start (mode, managed mode
    without forceNamespaced); negative retry counts are refused as the SimulationConfig refuses them."""
    values = {**NMIConfig().model_dump(), **settings}
    mode_raw = str(values["operation_mode"])
    mode = mode_raw.lower()
    if mode not in (MODE_STANDARD, MODE_MANAGED):
        raise _refuse(where, f"operation mode {mode_raw} not supported")
    values["operation_mode"] = mode
    if mode == MODE_MANAGED and not values["force_namespaced"]:
        raise _refuse(
            where,
            "managed mode not intialized in force namespaced mode (managed mode needs --forceNamespaced)",
        )
    for f in CONFIG_FLAGS:
        if f.kind == "int" and values[f.field] < 0:
            raise NMISettingsError(f"{where}: --{f.name}: must not be negative, got {values[f.field]}")
    return NMIConfig(**values)


# ---------------------------------------------------------------------------------------------------
# NMI containers among Kubernetes objects


@dataclass(frozen=True, slots=True)
class NMIContainer:
    """An NMI container of a DaemonSet in the input: its flags after Kubernetes' ``$(VAR)`` expansion."""

    source: str
    argv: tuple[str, ...]
    env: Mapping[str, str]


_VAR_REF: Final = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_k8s(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in command, args and env values: a known variable is
    replaced, an unknown reference is kept as written, ``$$`` is one ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, text)


def _is_nmi_image(image: str) -> bool:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "nmi"


def _is_nmi_program(word: object) -> bool:
    return isinstance(word, str) and word.rsplit("/", 1)[-1] == "nmi"


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NMISettingsError(f"{where}: expected a list of strings")
    return list(value)


def _literal_env(container: Mapping[str, Any], where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    raw = container.get("env") or []
    if not isinstance(raw, list):
        raise NMISettingsError(f"{where}.env: expected a list")
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise NMISettingsError(f"{where}.env[{i}]: expected a map with a name")
        if "valueFrom" in item:
            continue  # known only on the node (fieldRef, secrets): its $(NAME) references stay as written
        value = item.get("value", "")
        if not isinstance(value, str):
            raise NMISettingsError(f"{where}.env[{i}].value: expected a string")
        env[item["name"]] = expand_k8s(value, env)
    return env


def nmi_containers(objects: Iterable[Mapping[str, Any]]) -> list[NMIContainer]:
    """NMI containers of the DaemonSets among ``objects``: the container whose image is NMI's
    (``…/nmi:TAG``) or whose command (or, without one, first arg) is ``nmi``. The image's entrypoint is
    ``nmi``, so without a command every arg is a flag. The same DaemonSet twice counts once (the later)."""
    found: dict[str, NMIContainer] = {}
    for obj in objects:
        if obj.get("kind") != "DaemonSet":
            continue
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default" if isinstance(meta, Mapping) else "default"
        name = meta.get("name", "") if isinstance(meta, Mapping) else ""
        source = f"DaemonSet {ns}/{name}"
        spec = obj.get("spec") or {}
        template = spec.get("template") or {} if isinstance(spec, Mapping) else {}
        pod_spec = template.get("spec") or {} if isinstance(template, Mapping) else {}
        containers = pod_spec.get("containers") or [] if isinstance(pod_spec, Mapping) else []
        if not isinstance(containers, list):
            continue
        for i, c in enumerate(containers):
            if not isinstance(c, Mapping):
                continue
            where = f"{source}: spec.template.spec.containers[{i}]"
            command = _strings(c.get("command"), f"{where}.command")
            args = _strings(c.get("args"), f"{where}.args")
            image = c.get("image") if isinstance(c.get("image"), str) else ""
            if command:
                if not _is_nmi_program(command[0]):
                    if _is_nmi_image(str(image)):
                        raise NMISettingsError(
                            f"{where}.command: runs {command[0]!r}, not nmi: cannot read NMI's flags from it"
                        )
                    continue
                words = command[1:] + args
            elif args and _is_nmi_program(args[0]) and not _is_nmi_image(str(image)):
                words = args[1:]
            elif _is_nmi_image(str(image)):
                words = args
            else:
                continue
            env = _literal_env(c, where)
            found[source] = NMIContainer(
                source=source, argv=tuple(expand_k8s(w, env) for w in words), env=env
            )
            break
    return list(found.values())


# ---------------------------------------------------------------------------------------------------
# the aad-pod-identity chart (v1.8.17): values -> NMI's argv and env, and the objects NMI reads

#: the chart's defaults for the values it turns into NMI's flags and into objects NMI reads
CHART_DEFAULTS: Final[Mapping[str, Any]] = {
    "forceNamespaced": "false",
    "installMICException": "true",
    "operationMode": "standard",
    "customUserAgent": "",
    "azureIdentities": None,
    "nmi": {
        "tag": "v1.8.17",
        "logVerbosity": 0,
        "loggingFormat": "",
        "ipTableUpdateTimeIntervalInSeconds": "",
        "micNamespace": "",
        "probePort": "8085",
        "retryAttemptsForCreated": "",
        "retryAttemptsForAssigned": "",
        "findIdentityRetryIntervalInSeconds": "",
        "enableScaleFeatures": True,
        "prometheusPort": "",
        "blockInstanceMetadata": "",
        "metadataHeaderRequired": True,
        "allowNetworkPluginKubenet": False,
        "kubeletConfig": "/etc/default/kubelet",
        "setRetryAfterHeader": False,
        "enableConntrackDeletion": False,
    },
}


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart's: maps merge key by key, anything else
    replaces, and null deletes the chart's key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def go_truthy(value: object) -> bool:
    """Go template ``if``: false, 0, nil and empty strings, maps and lists are empty."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str, list, tuple, Mapping)):
        return bool(value)
    return True


def _render(value: object, key: str) -> str:
    """``{{ .Values.key }}``: what Helm writes for a value (nil writes nothing)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    raise NMISettingsError(f"{key}: expected a string, number or boolean, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class RenderedChart:
    """What the chart installs that NMI reads: NMI's argv and env, and objects (raw Kubernetes maps)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    objects: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = field(default=())


#: (values key under nmi, flag) the template renders as ``{{- if KEY }} --FLAG={{ KEY }}``, in its order
_VALUE_FLAGS: Final = (
    ("probePort", "http-probe-port"),
    ("ipTableUpdateTimeIntervalInSeconds", "ipt-update-interval-sec"),
    ("micNamespace", "MICNamespace"),
    ("retryAttemptsForCreated", "retry-attempts-for-created"),
    ("retryAttemptsForAssigned", "retry-attempts-for-assigned"),
    ("findIdentityRetryIntervalInSeconds", "find-identity-retry-interval"),
)
#: values whose 0 the chart's `if` drops, so that NMI runs with its default instead
_ZERO_DROPPED: Final = {
    "retryAttemptsForCreated": 16,
    "retryAttemptsForAssigned": 4,
    "findIdentityRetryIntervalInSeconds": 5,
}


def render_chart(user_values: Mapping[str, Any], release_namespace: str, where: str) -> RenderedChart:
    """The aad-pod-identity chart (v1.8.17) with ``user_values``: NMI's DaemonSet args and env
    (``templates/nmi-daemonset.yaml``), the exceptions (``mic-exception.yaml``) and the identities and
    bindings (``identities.yaml``) it installs. ``notes`` are the chart's surprises worth a warning."""
    try:
        return _render_chart(merge_values(CHART_DEFAULTS, user_values), release_namespace)
    except NMISettingsError as exc:
        raise NMISettingsError(f"{where}: {exc}") from None


def _render_chart(v: Mapping[str, Any], release_ns: str) -> RenderedChart:
    nmi = v.get("nmi") or {}
    if not isinstance(nmi, Mapping):
        raise NMISettingsError("nmi: expected a map")
    notes: list[str] = []
    tag = nmi.get("tag")
    if tag != "v1.8.17":
        notes.append(f"nmi.tag {tag!r}: nmisim simulates NMI v1.8.17 and renders the chart of v1.8.17")
    mode = v.get("operationMode")
    if not isinstance(mode, str):
        # `eq .Values.operationMode "managed"` fails to render for anything but a string
        raise NMISettingsError(f"operationMode: expected a string, got {_type(mode)}")
    argv = ["--node=$(NODE_NAME)"]
    for key, flag in _VALUE_FLAGS:
        value = nmi.get(key)
        if (
            key in _ZERO_DROPPED
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value == 0
        ):
            notes.append(
                f"nmi.{key}: 0 is empty to the chart's `if`: it passes no --{flag}, "
                f'so NMI uses its default {_ZERO_DROPPED[key]} (quote it, "0", to pass 0)'
            )
        if go_truthy(value):
            argv.append(f"--{flag}={_render(value, f'nmi.{key}')}")

    def put(flag: str, key: str, *, always: bool = False, top: bool = False) -> None:
        """``{{- if .Values.nmi.KEY }} --FLAG={{ .Values.nmi.KEY }}`` (``always``: without the ``if``)."""
        src, shown = (v, key) if top else (nmi, f"nmi.{key}")
        if always or go_truthy(src.get(key)):
            argv.append(f"--{flag}={_render(src.get(key), shown)}")

    put("enableScaleFeatures", "enableScaleFeatures", always=True)
    put("prometheus-port", "prometheusPort")
    put("block-instance-metadata", "blockInstanceMetadata")
    put("metadata-header-required", "metadataHeaderRequired", always=True)
    put("log-format", "loggingFormat")
    if go_truthy(nmi.get("logVerbosity")):
        argv.append(f"-v={_render(nmi['logVerbosity'], 'nmi.logVerbosity')}")
    argv.append(f"--operation-mode={mode}")
    if mode == MODE_MANAGED:
        argv.append("--forceNamespaced")
    put("allow-network-plugin-kubenet", "allowNetworkPluginKubenet")
    put("kubelet-config", "kubeletConfig", always=True)
    put("custom-user-agent", "customUserAgent", top=True)
    put("set-retry-after-header", "setRetryAfterHeader")
    put("enable-conntrack-deletion", "enableConntrackDeletion")
    env: dict[str, str] = {}
    if mode == MODE_STANDARD:
        env["FORCENAMESPACED"] = _render(v.get("forceNamespaced"), "forceNamespaced")
        if env["FORCENAMESPACED"] not in ("true", "false", ""):
            notes.append(
                f"forceNamespaced {env['FORCENAMESPACED']!r}: NMI turns namespaced matching on only for "
                "exactly 'true' (FORCENAMESPACED)"
            )
    if mode.lower() == MODE_MANAGED and mode != MODE_MANAGED:
        notes.append(f"operationMode {mode!r}: the chart adds --forceNamespaced only for exactly 'managed'")
    objects: list[Mapping[str, Any]] = []
    install = v.get("installMICException")
    if go_truthy(install):
        if isinstance(install, str) and go_parse_bool(install) is False:
            notes.append(
                f"installMICException {install!r}: a non-empty string is true to the chart's `if`: "
                "the exceptions are installed (write false, unquoted, to leave them out)"
            )
        if mode == MODE_STANDARD:
            objects.append(
                _exception(
                    "mic",
                    release_ns,
                    {"app": "mic", "component": "mic", "app.kubernetes.io/component": "mic"},
                )
            )
        objects.append(
            _exception("aks-addon-exception", "kube-system", {"kubernetes.azure.com/managedby": "aks"})
        )
    objects.extend(_identities(v.get("azureIdentities"), release_ns))
    return RenderedChart(argv=tuple(argv), env=env, objects=tuple(objects), notes=tuple(notes))


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _exception(name: str, namespace: str, labels: Mapping[str, str]) -> Mapping[str, Any]:
    return {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podLabels": dict(labels)},
    }


def _required(value: object, message: str) -> object:
    if value is None or value == "":
        raise NMISettingsError(f"azureIdentities: {message}")
    return value


def _identities(raw: object, release_ns: str) -> list[Mapping[str, Any]]:
    """``identities.yaml``: an AzureIdentity and an AzureIdentityBinding per key, in key order (Go's
    ``range`` over a map)."""
    if not go_truthy(raw):
        return []
    if not isinstance(raw, Mapping):
        raise NMISettingsError(f"azureIdentities: expected a map, got {_type(raw)}")
    out: list[Mapping[str, Any]] = []
    for key in sorted(raw):
        value = raw[key]
        p = f"azureIdentities.{key}"
        if not isinstance(value, Mapping):
            raise NMISettingsError(f"{p}: expected a map, got {_type(value)}")
        name = _render(value.get("name"), f"{p}.name") or str(key)
        ns = _render(value.get("namespace"), f"{p}.namespace") or release_ns
        id_type = value.get("type")
        type_int = 0 if id_type is None else go_parse_int(_render(id_type, f"{p}.type"))
        if type_int is None:
            raise NMISettingsError(f"{p}.type: expected an integer, got {id_type!r}")
        spec: dict[str, Any] = {
            "type": type_int,
            "clientID": _render(_required(value.get("clientID"), "clientID is required!"), f"{p}.clientID"),
        }
        if type_int == 0:
            spec["resourceID"] = _render(
                _required(value.get("resourceID"), "resourceID is required!"), f"{p}.resourceID"
            )
        else:
            spec["tenantID"] = _render(
                _required(value.get("tenantID"), "tenantID is required!"), f"{p}.tenantID"
            )
            password = _required(value.get("clientPassword"), "clientPassword is required!")
            if isinstance(password, str):
                # rendered into YAML as written: the chart's documented form is a JSON {name, namespace}
                try:
                    password = json.loads(password)
                except ValueError:
                    raise NMISettingsError(
                        f'{p}.clientPassword: expected {{"name": …, "namespace": …}}'
                    ) from None
            spec["clientPassword"] = password
            aux = value.get("auxiliaryTenantIDs") or []
            spec["auxiliaryTenantIDs"] = [str(a) for a in aux] if isinstance(aux, list) else []
        binding = value.get("binding")
        if not isinstance(binding, Mapping):
            raise NMISettingsError(
                f"{p}.binding: required (the template reads binding.name and binding.selector)"
            )
        out.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentity",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }
        )
        out.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentityBinding",
                "metadata": {"name": _render(binding.get("name"), f"{p}.binding.name"), "namespace": ns},
                "spec": {
                    "azureIdentity": name,
                    "selector": _render(
                        _required(binding.get("selector"), "binding.selector is required!"),
                        f"{p}.binding.selector",
                    ),
                },
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------
# precedence


@dataclass(frozen=True, slots=True)
class Layer:
    """One source of NMI's settings. A ``whole`` layer is an NMI invocation (a DaemonSet, the chart):
    what it does not set is NMI's default, which overrides lower layers. ``settings`` are what it sets
    explicitly (for the SimulationConfig: what differs from NMI's defaults); conflicts are reported
    only against explicit settings."""

    source: str
    settings: Mapping[str, Any]
    whole: bool


@dataclass(frozen=True, slots=True)
class Resolved:
    config: NMIConfig
    #: NMIConfig field -> the source its value comes from ("NMI's default" when none set it)
    provenance: Mapping[str, str]
    warnings: tuple[str, ...]


def _show(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def resolve(layers: Sequence[Layer]) -> Resolved:
    """Apply ``layers`` lowest first; a conflict (a layer replacing another's explicit, different value)
    is one warning naming both sources and the winner. Raises :class:`NMISettingsError` when the
    result is what NMI refuses (managed mode without forceNamespaced), naming where each came from."""
    default = NMIConfig().model_dump()
    values: dict[str, Any] = dict(default)
    provenance = dict.fromkeys(default, "NMI's default")
    explicit: dict[str, bool] = dict.fromkeys(default, False)
    warnings: list[str] = []
    for layer in layers:
        for name in default:
            if name in layer.settings:
                new, is_explicit, src = layer.settings[name], True, layer.source
            elif layer.whole:
                new, is_explicit, src = default[name], False, f"{layer.source} (NMI's default)"
            else:
                continue
            if name == "operation_mode":
                new = str(new).lower()
            if explicit[name] and new != values[name]:
                flag = FLAG_OF_FIELD[name]
                old = _show(values[name])
                warnings.append(
                    f"NMI's --{flag}: {provenance[name]} says {old}, {src} says {_show(new)}; "
                    f"using {_show(new)} ({layer.source} wins)"
                )
            values[name], provenance[name] = new, src
            explicit[name] = explicit[name] or is_explicit
    if values["operation_mode"] == MODE_MANAGED and not values["force_namespaced"]:
        raise NMISettingsError(
            "NMI v1.8.17 would not start: managed mode not intialized in force namespaced mode "
            f"(operation mode managed from {provenance['operation_mode']}, forceNamespaced false from "
            f"{provenance['force_namespaced']})"
        )
    return Resolved(config=nmi_config_of(values, "NMI"), provenance=provenance, warnings=tuple(warnings))


def config_layer(config: SimulationConfig, source: str) -> Layer:
    """A SimulationConfig as the lowest layer: its spec.nmi fields that differ from NMI's defaults count
    as set (the model does not keep which fields the file wrote)."""
    default = NMIConfig().model_dump()
    mine = config.nmi.model_dump()
    return Layer(source=source, settings={k: v for k, v in mine.items() if v != default[k]}, whole=True)
