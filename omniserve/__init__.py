"""omniserve: serving for multimodal omni models.

    from omniserve import Omni, SamplingParams
"""

from omniserve.omni import Omni
from omniserve.outputs import RequestOutput, StreamDelta
from omniserve.sampling_params import SamplingParams

__all__ = ["Omni", "RequestOutput", "SamplingParams", "StreamDelta"]
__version__ = "0.1.0"
