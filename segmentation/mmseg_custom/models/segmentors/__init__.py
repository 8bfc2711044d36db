
from .multimodal_encoder_decoder import MultiModalEncoderDecoder  # noqa: F401
