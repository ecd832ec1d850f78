"""The official CLIBD encoder classes, re-typed line by line for reference-fixture generation.

The fixture generator runs it in the side environment with timm 1.0.x, torchvision and transformers 4.29.2 (the
versions the official repository pins); see ``README.md`` next to it. It imports neither timm nor torchvision at
module level (only ``get_eval_image_transform`` needs torchvision), so the toolkit's tests import the same classes
for their stack-free reference (``tests/official_reference.py``, which supplies a re-typed timm ViT). Pytest does not
collect it (no ``test_`` prefix).

Source: github.com/bioscan-ml/clibd, HEAD 7d73f80 (2025-06-11), mirrored read-only. Each class/function
below names the official file and line range it follows. Bodies are copied as they are (comments shortened);
the only deliberate deviations, each marked ``DEVIATION``, are:

* ``get_sequence_pipeline``: torchtext (not installable here) is replaced by a plain dict with the same
  semantics as ``build_vocab_from_iterator(kmer_iter, specials=["<MASK>", "<CLS>", "<UNK>"])`` +
  ``set_default_index(vocab["<UNK>"])``: specials first in the given order, then the 1024 5-mers, all of
  frequency 1, sorted by (-freq, token) = lexicographic = ``itertools.product("ACGT")`` order
  (torchtext ``vocab_factory.py``: ``sorted(counter.items(), key=lambda x: (-x[1], x[0]))``).
* ``SimpleCLIP``: the OpenCLIP parts (``open_clip.get_tokenizer``, ``open_clip_model`` branch) are left out;
  with ``open_clip_model=None`` (the released models) the official forward runs the same lines.
* imports of unused modules (loratorch, clip, open_clip, faiss, hydra ...) are left out.
"""

from __future__ import annotations

import math
from itertools import product
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # annotation only: the module imports without timm
    from timm.models.vision_transformer import VisionTransformer


# ----------------------------------------------------------------------------------------------------------
# bioscanclip/util/util.py:77-85 (HEAD)
class PadSequence(object):
    def __init__(self, max_len):
        self.max_len = max_len

    def __call__(self, dna_sequence):
        if len(dna_sequence) > self.max_len:
            return dna_sequence[: self.max_len]
        else:
            return dna_sequence + "N" * (self.max_len - len(dna_sequence))


# bioscanclip/util/util.py:88-98 (HEAD)
class KmerTokenizer(object):
    def __init__(self, k, stride=1):
        self.k = k
        self.stride = stride

    def __call__(self, dna_sequence):
        tokens = []
        for i in range(0, len(dna_sequence) - self.k + 1, self.stride):
            k_mer = dna_sequence[i : i + self.k]
            tokens.append(k_mer)
        return tokens


# DEVIATION (stand-in for torchtext.vocab.Vocab, see module docstring). Same lookup semantics:
# vocab(list_of_tokens) -> list of ids, unknown token -> default index (<UNK>).
class _DictVocab(object):
    def __init__(self, itos, default_token):
        self.itos = list(itos)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        self.default_index = self.stoi[default_token]

    def __len__(self):
        return len(self.itos)

    def __getitem__(self, token):
        return self.stoi.get(token, self.default_index)

    def __call__(self, tokens):
        return [self.stoi.get(tok, self.default_index) for tok in tokens]


def build_kmer_vocab(k=5):
    # == build_vocab_from_iterator((["".join(kmer)] for kmer in product("ACGT", repeat=k)),
    #                              specials=["<MASK>", "<CLS>", "<UNK>"]); vocab.set_default_index(vocab["<UNK>"])
    specials = ["<MASK>", "<CLS>", "<UNK>"]
    kmers = sorted("".join(kmer) for kmer in product("ACGT", repeat=k))  # equal freq -> lexicographic
    return _DictVocab(specials + kmers, "<UNK>")


# bioscanclip/model/dna_encoder.py:53-63 (HEAD); torchtext vocab replaced by build_kmer_vocab (DEVIATION)
def get_sequence_pipeline(k=5):
    vocab = build_kmer_vocab(k)

    max_len = 660
    pad = PadSequence(max_len)
    tokenizer = KmerTokenizer(k, stride=k)
    sequence_pipeline = lambda x: [0, *vocab(tokenizer(pad(x)))]

    return sequence_pipeline


# bioscanclip/util/util.py:924-948 (HEAD)
def update_checkpoint_param_names(checkpoint):
    param_name_mapping = {
        "LoRA_barcode_bert": "CLIBDDNAEncoder",
        "lora_barcode_bert": "base_dna_encoder",
        "LoRA_ViT_timm": "CLIBDImageEncoder",
        "lora_vit": "base_image_encoder",
        "LoRA_bert": "CLIBDLanguageEncoder",
        "lora_bert": "base_language_encoder",
    }

    new_checkpoint = {}

    for name, tensor in checkpoint.items():
        new_name = name
        for key, value in param_name_mapping.items():
            if key in new_name:
                new_name = new_name.replace(key, value)
        new_checkpoint[new_name] = tensor

    return new_checkpoint


# ----------------------------------------------------------------------------------------------------------
# bioscanclip/model/image_encoder.py:12-46 (HEAD); "MODIFIED FROM JamesQFreeman/LoRA-ViT lora.py"
class _LoRA_qkv_timm(nn.Module):
    """In timm it is implemented as
    self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)

    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    """

    def __init__(
            self,
            qkv: nn.Module,
            linear_a_q: nn.Module,
            linear_b_q: nn.Module,
            linear_a_v: nn.Module,
            linear_b_v: nn.Module,
    ):
        super().__init__()
        self.qkv = qkv
        self.linear_a_q = linear_a_q
        self.linear_b_q = linear_b_q
        self.linear_a_v = linear_a_v
        self.linear_b_v = linear_b_v
        self.dim = qkv.in_features
        self.w_identity = torch.eye(qkv.in_features)

    def forward(self, x):
        qkv = self.qkv(x)  # B,N,3*org_C
        new_q = self.linear_b_q(self.linear_a_q(x))
        new_v = self.linear_b_v(self.linear_a_v(x))
        qkv[:, :, : self.dim] += new_q
        qkv[:, :, -self.dim:] += new_v
        return qkv


# bioscanclip/model/image_encoder.py:49-107 (HEAD). Note `if lora_layer:` (line 54): [] is falsy, so
# lora_layer=[] puts adapters into EVERY block (the released "full fine-tune" models have them).
class CLIBDImageEncoder(nn.Module):
    def __init__(self, vit_model: VisionTransformer, r: int, num_classes: int = 0, lora_layer=None):
        super(CLIBDImageEncoder, self).__init__()

        assert r > 0
        if lora_layer:
            self.lora_layer = lora_layer
        else:
            self.lora_layer = list(range(len(vit_model.blocks)))

        # create for storage, then we can init them or load weights
        self.w_As = []  # These are linear layers
        self.w_Bs = []

        # lets freeze first
        for param in vit_model.parameters():
            param.requires_grad = False

        # Here, we do the surgery
        for t_layer_i, blk in enumerate(vit_model.blocks):
            # If we only want few lora layer instead of all
            if t_layer_i not in self.lora_layer:
                continue
            w_qkv_linear = blk.attn.qkv
            self.dim = w_qkv_linear.in_features
            w_a_linear_q = nn.Linear(self.dim, r, bias=False)
            w_b_linear_q = nn.Linear(r, self.dim, bias=False)
            w_a_linear_v = nn.Linear(self.dim, r, bias=False)
            w_b_linear_v = nn.Linear(r, self.dim, bias=False)
            self.w_As.append(w_a_linear_q)
            self.w_Bs.append(w_b_linear_q)
            self.w_As.append(w_a_linear_v)
            self.w_Bs.append(w_b_linear_v)
            blk.attn.qkv = _LoRA_qkv_timm(
                w_qkv_linear,
                w_a_linear_q,
                w_b_linear_q,
                w_a_linear_v,
                w_b_linear_v,
            )
        self.reset_parameters()
        self.base_image_encoder = vit_model
        if num_classes > 0:
            self.base_image_encoder.reset_classifier(num_classes=num_classes)

    def reset_classifier(self, num_classes):
        self.base_image_encoder.reset_classifier(num_classes=num_classes)

    def reset_parameters(self) -> None:
        for w_A in self.w_As:
            nn.init.kaiming_uniform_(w_A.weight, a=math.sqrt(5))
        for w_B in self.w_Bs:
            nn.init.zeros_(w_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.base_image_encoder(x)


# ----------------------------------------------------------------------------------------------------------
# bioscanclip/model/dna_encoder.py:66-77 (HEAD); identical class in language_encoder.py:22-33
class _LoRALayer(nn.Module):
    def __init__(self, w: nn.Module, w_a: nn.Module, w_b: nn.Module):
        super().__init__()
        self.w = w
        self.w_a = w_a
        self.w_b = w_b

    def forward(self, x):
        x = self.w(x) + self.w_b(self.w_a(x))
        return x


# bioscanclip/model/dna_encoder.py:80-137 (HEAD). `if lora_layer is not None` (line 85): [] = no adapters,
# None = adapters on query/value of every layer. The MLM decoder is replaced by the num_classes head
# (lines 121-123); the embedding is softmax(logits).mean over all positions (line 137), no attention mask.
class CLIBDDNAEncoder(nn.Module):
    def __init__(self, model, r: int, num_classes: int = 0, lora_layer=None):
        super(CLIBDDNAEncoder, self).__init__()

        assert r > 0
        if lora_layer is not None:
            self.lora_layer = lora_layer
        else:
            self.lora_layer = list(range(len(model.bert.encoder.layer)))

        # create for storage, then we can init them or load weights
        self.w_As = []  # These are linear layers
        self.w_Bs = []

        # lets freeze first
        for param in model.parameters():
            param.requires_grad = False

        for layer_idx, layer in enumerate(model.bert.encoder.layer):
            if layer_idx not in self.lora_layer:
                continue
            w_q_linear = layer.attention.self.query
            w_v_linear = layer.attention.self.value
            dim = layer.attention.self.query.in_features

            w_a_linear_q = nn.Linear(dim, r, bias=False)
            w_b_linear_q = nn.Linear(r, dim, bias=False)
            w_a_linear_v = nn.Linear(dim, r, bias=False)
            w_b_linear_v = nn.Linear(r, dim, bias=False)

            self.w_As.append(w_a_linear_q)
            self.w_Bs.append(w_b_linear_q)
            self.w_As.append(w_a_linear_v)
            self.w_Bs.append(w_b_linear_v)

            layer.attention.self.query = _LoRALayer(w_q_linear, w_a_linear_q, w_b_linear_q)
            layer.attention.self.value = _LoRALayer(w_v_linear, w_a_linear_v, w_b_linear_v)

        self.reset_parameters()
        self.base_dna_encoder = model

        if num_classes > 0:
            self.base_dna_encoder.cls.predictions.decoder = nn.Linear(
                self.base_dna_encoder.cls.predictions.decoder.in_features, num_classes)

    def reset_parameters(self) -> None:
        for w_A in self.w_As:
            nn.init.kaiming_uniform_(w_A.weight, a=math.sqrt(5))
        for w_B in self.w_Bs:
            nn.init.zeros_(w_B.weight)

    def forward(self, sequence) -> Tensor:
        """
        TODO: change to "return self.base_dna_encoder(x).hidden_states[-1].mean(dim=1)"
        TODO: Then also retrain the models.
        """

        return self.base_dna_encoder(sequence).logits.softmax(dim=-1).mean(dim=1)


# ----------------------------------------------------------------------------------------------------------
# bioscanclip/model/language_encoder.py:36-89 (HEAD). Head = Linear(pooler.dense.out_features, num_classes)
# (line 78); embedding = proj(last_hidden_state.mean(dim=1)) over ALL positions incl. [PAD] (line 89).
class CLIBDLanguageEncoder(nn.Module):
    def __init__(self, model, r: int, num_classes: int = 0, lora_layer=None):
        super(CLIBDLanguageEncoder, self).__init__()

        assert r > 0
        if lora_layer is not None:
            self.lora_layer = lora_layer
        else:
            self.lora_layer = list(range(len(model.encoder.layer)))

        # create for storage, then we can init them or load weights
        self.w_As = []  # These are linear layers
        self.w_Bs = []

        # lets freeze first
        for param in model.parameters():
            param.requires_grad = False

        for layer_idx, layer in enumerate(model.encoder.layer):
            if layer_idx not in self.lora_layer:
                continue
            w_q_linear = layer.attention.self.query
            w_v_linear = layer.attention.self.value
            dim = layer.attention.self.query.in_features

            w_a_linear_q = nn.Linear(dim, r, bias=False)
            w_b_linear_q = nn.Linear(r, dim, bias=False)
            w_a_linear_v = nn.Linear(dim, r, bias=False)
            w_b_linear_v = nn.Linear(r, dim, bias=False)

            self.w_As.append(w_a_linear_q)
            self.w_Bs.append(w_b_linear_q)
            self.w_As.append(w_a_linear_v)
            self.w_Bs.append(w_b_linear_v)

            layer.attention.self.query = _LoRALayer(w_q_linear, w_a_linear_q, w_b_linear_q)
            layer.attention.self.value = _LoRALayer(w_v_linear, w_a_linear_v, w_b_linear_v)

        self.reset_parameters()
        self.base_language_encoder = model

        if num_classes > 0:
            self.proj = nn.Linear(self.base_language_encoder.pooler.dense.out_features, num_classes)

    def reset_parameters(self) -> None:
        for w_A in self.w_As:
            nn.init.kaiming_uniform_(w_A.weight, a=math.sqrt(5))
        for w_B in self.w_Bs:
            nn.init.zeros_(w_B.weight)

    def forward(self, x) -> Tensor:

        return self.proj(self.base_language_encoder(**x).last_hidden_state.mean(dim=1))


# ----------------------------------------------------------------------------------------------------------
# bioscanclip/model/simple_clip.py:21-61 (HEAD), OpenCLIP parts left out (DEVIATION, see module docstring).
class SimpleCLIP(nn.Module):
    def __init__(self, image_encoder, dna_encoder, language_encoder, open_clip_model=None,
                 init_logit_scale: float = np.log(1 / 0.07), init_logit_bias: Optional[float] = None):
        super(SimpleCLIP, self).__init__()
        if open_clip_model is not None:
            raise NotImplementedError("OpenCLIP branch not re-typed")
        self.image_encoder = image_encoder
        self.dna_encoder = dna_encoder
        self.language_encoder = language_encoder
        self.open_clip_model = open_clip_model
        self.logit_scale = nn.Parameter(torch.ones([]) * init_logit_scale)
        if init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.ones([]) * init_logit_bias)
        else:
            self.logit_bias = None

    def forward(self, image_input, dna_input, language_input):
        image_output = None
        dna_output = None
        language_output = None

        if self.dna_encoder is not None:
            dna_output = F.normalize(self.dna_encoder(dna_input), p=2, dim=-1)

        # (open_clip_model branch, simple_clip.py:47-55, left out)
        if self.image_encoder is not None:
            image_output = F.normalize(self.image_encoder(image_input), p=2, dim=-1)
        if self.language_encoder is not None:
            language_output = F.normalize(self.language_encoder(language_input), p=2, dim=-1)
        return image_output, dna_output, language_output, self.logit_scale.exp(), self.logit_bias


# v1 (arXiv "BIOSCAN-CLIP") layout: github.com/bioscan-ml/bioscan-clip HEAD 382d5ff,
# bioscanclip/model/simple_clip.py:18-50 -- no logit_scale parameter, returns 3 outputs. The v1 encoders
# (LoRA_ViT_timm / LoRA_barcode_bert / LoRA_bert, attributes lora_vit / lora_barcode_bert / lora_bert) have the
# same bodies as the CLIBD* classes above; only the attribute names differ (hence update_checkpoint_param_names).
class SimpleCLIPv1(nn.Module):
    def __init__(self, image_encoder, dna_encoder, language_encoder, open_clip_model=None):
        super(SimpleCLIPv1, self).__init__()
        if open_clip_model is not None:
            raise NotImplementedError("OpenCLIP branch not re-typed")
        self.image_encoder = image_encoder
        self.dna_encoder = dna_encoder
        self.language_encoder = language_encoder
        self.open_clip_model = open_clip_model

    def forward(self, image_input, dna_input, language_input):
        image_output = None
        dna_output = None
        language_output = None

        if self.dna_encoder is not None:
            dna_output = F.normalize(self.dna_encoder(dna_input), p=2, dim=-1)

        if self.image_encoder is not None:
            image_output = F.normalize(self.image_encoder(image_input), p=2, dim=-1)
        if self.language_encoder is not None:
            language_output = F.normalize(self.language_encoder(language_input), p=2, dim=-1)
        return image_output, dna_output, language_output


# ----------------------------------------------------------------------------------------------------------
# Evaluation preprocessing and text handling, bioscanclip/util/dataset.py (HEAD)

# dataset.py:216-223 (eval, non-OpenCLIP, no transform_with_resize). No mean/std normalisation.
def get_eval_image_transform():
    import torchvision.transforms as transforms

    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Resize(size=256, antialias=True),
            transforms.CenterCrop(224),
        ]
    )


# dataset.py:150-153: i['order'] + ' ' + i['family'] + ' ' + i['genus'] + ' ' + i['species'].
# Missing ranks are the literal 'not_classified' in the official HDF5 files
# (scripts/data_processing/generate_hdf5_file_5m.py:48-51 replace None/NaN by it).
def taxonomy_string(order, family, genus, species):
    i = {"order": order, "family": family, "genus": genus, "species": species}
    for level in ("order", "family", "genus", "species"):
        if i[level] is None or i[level] == "" or (isinstance(i[level], float) and math.isnan(i[level])):
            i[level] = "not_classified"
    return i['order'] + ' ' + i['family'] + ' ' + i['genus'] + ' ' + i['species']


# dataset.py:280-288 (tokenizer = AutoTokenizer.from_pretrained("prajjwal1/bert-small"), language_encoder.py:14)
def tokenize_text(tokenizer, label_string):
    language_tokens = tokenizer([label_string], padding="max_length", max_length=20,
                                truncation=True)
    language_input_ids = language_tokens['input_ids']
    language_token_type_ids = language_tokens['token_type_ids']
    language_attention_mask = language_tokens['attention_mask']

    language_input_ids = torch.tensor(language_input_ids[0])
    language_token_type_ids = torch.tensor(language_token_type_ids[0])
    language_attention_mask = torch.tensor(language_attention_mask[0])
    return language_input_ids, language_token_type_ids, language_attention_mask


# epoch/inference_epoch.py:65-66: the dict handed to the language encoder (after DataLoader collation)
def language_input_dict(input_ids, token_type_ids, attention_mask):
    return {'input_ids': input_ids, 'token_type_ids': token_type_ids, 'attention_mask': attention_mask}
