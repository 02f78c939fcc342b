"""The one exception type that entry points report as a short message instead of a traceback."""


class UserInputError(Exception):
    """A problem the user can fix (bad value, missing file); its message says what and how."""


class TrainingDivergedError(UserInputError):
    """The loss became NaN or infinite: training stops there, and the last good checkpoint is kept."""
