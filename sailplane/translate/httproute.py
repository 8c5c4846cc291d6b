"""One VirtualService HTTP route -> Envoy routes (one per ``match`` entry).

Semantics: istio.io/latest/docs/reference/config/networking/virtual-service
(HTTPRoute, HTTPMatchRequest, HTTPRouteDestination, HTTPRetry, HTTPFaultInjection,
CorsPolicy, Headers). Defaults are Istio's: no route timeout, and a default
retry policy of 2 attempts on connection failures and 503s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from sailplane.model.networking import (
    CorsPolicy,
    Destination,
    Fault,
    HeaderOperations,
    HTTPMatch,
    HTTPRoute,
    Retries,
    StringMatch,
)
from sailplane.translate.common import duration, pack

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"

# Istio's default retry policy (pilot/pkg/networking/core/route/retry).
DEFAULT_RETRY_ON = (
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,"
    "reset-before-request"
)
DEFAULT_RETRIES = 2


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a route needs from its surroundings.

    ``cluster_for`` turns a destination into a cluster name (it knows the
    registry and the port of the virtual host being built); ``hash_policy_for``
    gives the consistent-hash policy of the destination's DestinationRule.
    """

    cluster_for: Callable[[Destination], str]
    hash_policy_for: Callable[[Destination], list[rc.RouteAction.HashPolicy]]


def string_matcher(match: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if match.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    return string_pb2.StringMatcher(**{match.kind: match.value}, ignore_case=ignore_case)


def _header(name: str, match: StringMatch | None, invert: bool = False) -> rc.HeaderMatcher:
    if match is None:
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=string_matcher(match), invert_match=invert)


def build_route_match(match: HTTPMatch | None) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = match.uri if match else None
    if uri is None:
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.regex = uri.value
    if match is None:
        return out
    if match.ignore_uri_case:
        out.case_sensitive.value = False
    if match.method is not None:
        out.headers.append(_header(":method", match.method))
    if match.authority is not None:
        out.headers.append(_header(":authority", match.authority))
    if match.scheme is not None:
        out.headers.append(_header(":scheme", match.scheme))
    for header in match.headers:
        out.headers.append(_header(header.name, header.match, header.invert))
    for name, value in match.query_params:
        if value is None:
            out.query_parameters.append(rc.QueryParameterMatcher(name=name, present_match=True))
        else:
            out.query_parameters.append(
                rc.QueryParameterMatcher(name=name, string_match=string_matcher(value))
            )
    return out


def _percent(value: float) -> percent_pb2.FractionalPercent:
    """Istio percentages (0-100, fractions allowed) as parts per million."""
    return percent_pb2.FractionalPercent(
        numerator=round(value * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def build_fault(fault: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay.fixed_delay),
                percentage=_percent(fault.delay.percentage),
            )
        )
    if fault.abort is not None:
        abort = fault_pb2.FaultAbort(percentage=_percent(fault.abort.percentage))
        if fault.abort.grpc_status is not None:  # gRPC and Envoy both read it (A33)
            abort.grpc_status = fault.abort.grpc_status
        else:
            abort.http_status = fault.abort.http_status
        out.abort.CopyFrom(abort)
    return out


def build_cors(cors: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age is not None:
        out.max_age = str(int(cors.max_age))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out


def build_retry_policy(retries: Retries | None) -> rc.RetryPolicy | None:
    if retries is not None and retries.attempts == 0:
        return None
    policy = rc.RetryPolicy(
        num_retries=wrappers_pb2.UInt32Value(
            value=retries.attempts if retries else DEFAULT_RETRIES
        ),
        host_selection_retry_max_attempts=5,
    )
    if retries is None or retries.ignore_previous_hosts:
        policy.retry_host_predicate.append(
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_previous_hosts(),
            )
        )
    if retries is not None and retries.remote_localities:
        # As Istio: skip the priorities tried before, recomputed every 2 attempts.
        policy.retry_priority.name = "envoy.retry_priorities.previous_priorities"
        policy.retry_priority.typed_config.CopyFrom(
            pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2))
        )
    if retries is not None and retries.backoff is not None:
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff))
    retry_on = (retries.retry_on if retries else "") or DEFAULT_RETRY_ON
    # Istio lets retryOn list status codes ("503,connect-failure").
    conditions, codes = [], []
    for item in (part.strip() for part in retry_on.split(",")):
        if item.isdigit():
            codes.append(int(item))
        elif item:
            conditions.append(item)
    if not retries or not retries.retry_on:
        codes = [503]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    policy.retry_on = ",".join(conditions)
    policy.retriable_status_codes.extend(codes)
    if retries is not None and retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    return policy


def _previous_hosts() -> object:
    return pack(previous_hosts_pb2.PreviousHostsPredicate())


def header_options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    out = []
    for name, value in ops.set.items():
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    for name, value in ops.add.items():
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value),
                append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
            )
        )
    return out


def _route_action(route: HTTPRoute, match: HTTPMatch | None, ctx: RouteContext) -> rc.RouteAction:
    action = rc.RouteAction()
    targets = [t for t in route.route if t.weight > 0] or list(route.route)
    if len(targets) == 1 and not targets[0].headers.request and not targets[0].headers.response:
        action.cluster = ctx.cluster_for(targets[0].destination)
    else:
        for target in targets:
            weight = rc.WeightedCluster.ClusterWeight(
                name=ctx.cluster_for(target.destination),
                weight=wrappers_pb2.UInt32Value(value=target.weight or 100 // len(targets)),
                request_headers_to_add=header_options(target.headers.request),
                request_headers_to_remove=list(target.headers.request.remove),
                response_headers_to_add=header_options(target.headers.response),
                response_headers_to_remove=list(target.headers.response.remove),
            )
            action.weighted_clusters.clusters.append(weight)
    action.hash_policy.extend(ctx.hash_policy_for(targets[0].destination))
    # Istio: no timeout unless the VirtualService sets one.
    action.timeout.CopyFrom(duration(route.timeout or 0))
    retry = build_retry_policy(route.retries)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.uri is not None:
            if match is not None and match.uri is not None and match.uri.kind == "regex":
                action.regex_rewrite.pattern.regex = match.uri.value
                action.regex_rewrite.substitution = rewrite.uri
            else:
                action.prefix_rewrite = rewrite.uri
        if rewrite.uri_regex is not None:
            action.regex_rewrite.pattern.regex = rewrite.uri_regex[0]
            action.regex_rewrite.substitution = rewrite.uri_regex[1]
        if rewrite.authority:
            action.host_rewrite_literal = rewrite.authority
    # Istio (route.go MirrorPercent, MirrorPercentByPolicy): unset is 100%,
    # an explicit 0 mirrors nothing; mirror first, then mirrors[] in order.
    mirrors = [(route.mirror, route.mirror_percentage)] if route.mirror is not None else []
    mirrors.extend((m.destination, m.percentage) for m in route.mirrors)
    for destination, pct in mirrors:
        if pct is not None and pct <= 0:
            continue
        mirror = rc.RouteAction.RequestMirrorPolicy(cluster=ctx.cluster_for(destination))
        mirror.runtime_fraction.default_value.CopyFrom(_percent(100.0 if pct is None else pct))
        mirror.trace_sampled.value = False
        action.request_mirror_policies.append(mirror)
    return action


def build_http_routes(
    route: HTTPRoute, matches: list[HTTPMatch | None], ctx: RouteContext, default_name: str
) -> list[rc.Route]:
    """The Envoy routes for ``route``, one per applicable match (``None`` = all)."""
    out = []
    for match in matches:
        envoy_route = rc.Route(
            name=(match.name if match and match.name else route.name) or default_name,
            match=build_route_match(match),
        )
        if route.redirect is not None:
            r = route.redirect
            redirect = rc.RedirectAction(
                path_redirect=r.uri, host_redirect=r.authority, scheme_redirect=r.scheme
            )
            if r.port:
                redirect.port_redirect = r.port
            redirect.response_code = {301: 0, 302: 1, 303: 2, 307: 3, 308: 4}[r.code]
            envoy_route.redirect.CopyFrom(redirect)
        elif route.direct_response is not None:
            envoy_route.direct_response.status = route.direct_response.status
            if route.direct_response.body:
                envoy_route.direct_response.body.inline_string = route.direct_response.body
        else:
            envoy_route.route.CopyFrom(_route_action(route, match, ctx))
        if route.fault is not None:
            envoy_route.typed_per_filter_config[FAULT_FILTER].CopyFrom(
                pack(build_fault(route.fault))
            )
        if route.cors is not None:
            envoy_route.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(build_cors(route.cors)))
        envoy_route.request_headers_to_add.extend(header_options(route.headers.request))
        envoy_route.request_headers_to_remove.extend(route.headers.request.remove)
        envoy_route.response_headers_to_add.extend(header_options(route.headers.response))
        envoy_route.response_headers_to_remove.extend(route.headers.response.remove)
        out.append(envoy_route)
    return out
