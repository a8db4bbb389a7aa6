"""The messages of DMTF's Base message registry (DSP8011, Base.1.22.1) that the service answers with,
copied verbatim: message text with its %1.. arguments, severity and resolution. Redfish errors and
``@Message.ExtendedInfo`` entries are built from them; tests check them against the published file."""

from __future__ import annotations

from typing import Any, NamedTuple

REGISTRY = "Base.1.22.1"
PREFIX = "Base.1.22"  # a MessageId names the registry by major.minor
# DMTF's registries whose messages the service sends (tests/data/redfish/registries holds exactly these)
STANDARD_REGISTRIES = (REGISTRY, "Environmental.1.4.0", "Power.1.2.0", "ResourceEvent.1.4.3")


class Msg(NamedTuple):
    text: str
    args: int
    severity: str
    resolution: str


BASE: dict[str, Msg] = {
    "Success": Msg(
        "The request completed successfully.",
        0,
        "OK",
        "None.",
    ),
    "Created": Msg(
        "The resource was created successfully.",
        0,
        "OK",
        "None.",
    ),
    "GeneralError": Msg(
        "A general error has occurred.  See Resolution for information on how to resolve the error, or @Message.ExtendedInfo if Resolution is not provided.",
        0,
        "Critical",
        "None.",
    ),
    "InternalError": Msg(
        "The request failed due to an internal service error.  The service is still operational.",
        0,
        "Critical",
        "Resubmit the request.  If the problem persists, consider resetting the service.",
    ),
    "MalformedJSON": Msg(
        "The request body submitted was malformed JSON and could not be parsed by the receiving service.",
        0,
        "Critical",
        "Ensure that the request body is valid JSON and resubmit the request.",
    ),
    "PropertyUnknown": Msg(
        "The property %1 is not in the list of valid properties for the resource.",
        1,
        "Warning",
        "Remove the unknown property from the request body and resubmit the request if the operation failed.",
    ),
    "PropertyNotWritable": Msg(
        "The property %1 is a read-only property and cannot be assigned a value.",
        1,
        "Warning",
        "Remove the property from the request body and resubmit the request if the operation failed.",
    ),
    "PropertyValueTypeError": Msg(
        "The value '%1' for the property %2 is not a type that the property can accept.",
        2,
        "Warning",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.",
    ),
    "PropertyValueOutOfRange": Msg(
        "The value '%1' for the property %2 is not in the supported range of acceptable values.",
        2,
        "Warning",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.",
    ),
    "PropertyValueIncorrect": Msg(
        "The property '%1' with the requested value of '%2' could not be written because the value is not acceptable for the property.",
        2,
        "Warning",
        "None.",
    ),
    "PropertyMissing": Msg(
        "The property %1 is a required property and must be included in the request.",
        1,
        "Warning",
        "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.",
    ),
    "NoOperation": Msg(
        "The request body submitted contain no data to act upon and no changes to the resource took place.",
        0,
        "Warning",
        "Add properties in the JSON object and resubmit the request.",
    ),
    "ResourceMissingAtURI": Msg(
        "The resource at the URI '%1' was not found.",
        1,
        "Critical",
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
    ),
    "OperationNotAllowed": Msg(
        "The HTTP method is not allowed on this resource.",
        0,
        "Critical",
        "None.",
    ),
    "InsufficientPrivilege": Msg(
        "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
        0,
        "Critical",
        "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.",
    ),
    "NoValidSession": Msg(
        "There is no valid session established with the implementation.",
        0,
        "Critical",
        "Establish a session before attempting any operations.",
    ),
    "ServiceTemporarilyUnavailable": Msg(
        "The service is temporarily unavailable.  Retry in %1 seconds.",
        1,
        "Critical",
        "Wait for the indicated retry duration and retry the operation.",
    ),
    "ResourceInUse": Msg(
        "The change to the requested resource failed because the resource is in use or in transition.",
        0,
        "Warning",
        "Remove the condition and resubmit the request if the operation failed.",
    ),
    "QueryNotSupported": Msg(
        "Querying is not supported by the implementation.",
        0,
        "Warning",
        "Remove the query parameters and resubmit the request if the operation failed.",
    ),
    "QueryParameterUnsupported": Msg(
        "Query parameter '%1' is not supported.",
        1,
        "Warning",
        "Correct or remove the query parameter and resubmit the request.",
    ),
    "QueryParameterValueFormatError": Msg(
        "The value '%1' for the parameter %2 is not a format that the parameter can accept.",
        2,
        "Warning",
        "Correct the value for the query parameter in the request and resubmit the request if the operation failed.",
    ),
    "CreateLimitReachedForResource": Msg(
        "The create operation failed because the resource has reached the limit of possible resources.",
        0,
        "Critical",
        "Either delete resources and resubmit the request if the operation failed or do not resubmit the request.",
    ),
    "PropertyValueFormatError": Msg(
        "The value '%1' for the property %2 is not a format that the property can accept.",
        2,
        "Warning",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.",
    ),
    "PropertyValueNotInList": Msg(
        "The value '%1' for the property %2 is not in the list of acceptable values.",
        2,
        "Warning",
        "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.",
    ),
    "ActionParameterMissing": Msg(
        "The action %1 requires the parameter %2 to be present in the request body.",
        2,
        "Critical",
        "Supply the action with the required parameter in the request body when the request is resubmitted.",
    ),
    "ActionParameterValueNotInList": Msg(
        "The value '%1' for the parameter %2 in the action %3 is not in the list of acceptable values.",
        3,
        "Warning",
        "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.",
    ),
    "ActionParameterUnknown": Msg(
        "The action %1 was submitted with the invalid parameter %2.",
        2,
        "Warning",
        "Correct the invalid action parameter and resubmit the request if the operation failed.",
    ),
    "ActionParameterValueTypeError": Msg(
        "The value '%1' for the parameter %2 in the action %3 is not a type that the parameter can accept.",
        3,
        "Warning",
        "Correct the value for the parameter in the request body and resubmit the request if the operation failed.",
    ),
}


# the messages of DMTF's event registries that node events and state changes are told with, verbatim
EVENTS: dict[str, dict[str, Msg]] = {
    "Environmental.1.4.0": {
        "PumpFailed": Msg(
            "Pump '%1' has failed.", 1, "Critical", "Check the pump hardware and replace any faulty component."
        ),
    },
    "Power.1.2.0": {
        "CurrentCritical": Msg(
            "Current '%1' reading of %2 amperes exceeds the critical level.",
            2,
            "Critical",
            "Check the condition of the resource listed in OriginOfCondition.",
        ),
    },
    "ResourceEvent.1.4.3": {
        "ResourceErrorsDetected": Msg(
            "The resource property %1 has detected errors of type '%2'.",
            2,
            "Warning",
            "Resolution is dependent upon error type.",
        ),
        "ResourceStatusChangedOK": Msg("The health of resource '%1' has changed to %2.", 2, "OK", "None."),
        "ResourceStatusChangedWarning": Msg("The health of resource '%1' has changed to %2.", 2, "Warning", "None."),
        "ResourceStatusChangedCritical": Msg("The health of resource '%1' has changed to %2.", 2, "Critical", "None."),
        "ResourceStateChanged": Msg("The state of resource '%1' has changed to %2.", 2, "OK", "None."),
    },
}


def fill(text: str, args: tuple[object, ...]) -> str:
    for i, a in reversed(list(enumerate(args, 1))):  # %10 before %1
        text = text.replace(f"%{i}", str(a))
    return text


def message(key: str, *args: object) -> dict[str, Any]:
    """One ``Message`` object (Message.v1_3_0) of the Base registry, its arguments filled in."""
    m = BASE[key]
    if len(args) != m.args:
        raise ValueError(f"{key} takes {m.args} arguments, got {len(args)}")
    text = fill(m.text, args)
    return {
        "@odata.type": "#Message.v1_3_0.Message",
        "MessageId": f"{PREFIX}.{key}",
        "Message": text,
        "MessageArgs": [str(a) for a in args],
        "MessageSeverity": m.severity,
        "Resolution": m.resolution,
    }


def error(key: str, *args: object, more: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A Redfish error response body (DSP0266 "Error responses"): the first message as ``code``
    and ``message``, every message in ``@Message.ExtendedInfo``."""
    first = message(key, *args)
    return {
        "error": {
            "code": first["MessageId"],
            "message": first["Message"],
            "@Message.ExtendedInfo": [first, *more],
        }
    }
