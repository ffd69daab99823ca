"""Geant4's system of units, in the two forms a GDML file meets them.

1. Names inside expressions (``10*cm``, ``2*pi``): exactly what ``G4GDMLEvaluator`` defines, i.e.
   CLHEP's ``Evaluator::setStdMath`` plus ``setSystemOfUnits(meter, kilogram, second, ampere,
   kelvin, mole, candela)`` called with Geant4's internal values (mm, ns, MeV, eplus = 1). These
   names are reserved: a ``<constant>`` of the same name is a redefinition, as in Geant4.
   A few CLHEP physical constants that Geant4's GDML evaluator does *not* define (``twopi``,
   ``c_light``, ``hbarc`` ...) are offered as soft names: usable, but a file may define its own.
2. ``unit="..."`` / ``lunit`` / ``aunit`` attributes: looked up in Geant4's ``G4UnitsTable``
   (``G4UnitDefinition::BuildUnitsTable``), by name or symbol, with its category (Length, Angle,
   Energy ...). Geant4 turns an unknown unit into 0 with a warning; here it is an error.

Internal units are Geant4's: mm, ns, MeV, rad, eplus, kelvin, mole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

# --- CLHEP SystemOfUnits in Geant4 internal units -------------------------------------------------
_PI = 3.14159265358979323846
MM = 1.0
METER = 1000.0 * MM
NS = 1.0
SECOND = 1.0e9 * NS
MEV = 1.0
EPLUS = 1.0
E_SI = 1.602176634e-19
EV = 1.0e-6 * MEV
JOULE = EV / E_SI
KILOGRAM = JOULE * SECOND * SECOND / (METER * METER)
GRAM = 1.0e-3 * KILOGRAM
COULOMB = EPLUS / E_SI
AMPERE = COULOMB / SECOND
KELVIN = 1.0
MOLE = 1.0
CANDELA = 1.0
CM = 10.0 * MM
CM3 = CM * CM * CM
G_PER_CM3 = GRAM / CM3


def _clhep_evaluator_names() -> dict[str, float]:
    """The variables ``setStdMath`` + ``setSystemOfUnits`` create, with Geant4's base values."""
    kilo, mega, giga, tera, peta = 1e3, 1e6, 1e9, 1e12, 1e15
    deci, centi, milli, micro, nano, pico = 1e-1, 1e-2, 1e-3, 1e-6, 1e-9, 1e-12
    v: dict[str, float] = {
        "pi": _PI, "e": 2.7182818284590452354, "gamma": 0.577215664901532861,
        "radian": 1.0, "rad": 1.0, "degree": _PI / 180.0, "deg": _PI / 180.0,
    }
    m, kg, s, a, k, mol, cd = METER, KILOGRAM, SECOND, AMPERE, KELVIN, MOLE, CANDELA
    v |= {"meter": m, "metre": m, "m": m, "kilogram": kg, "kg": kg, "second": s, "s": s,
          "ampere": a, "amp": a, "A": a, "kelvin": k, "K": k, "mole": mol, "mol": mol,
          "candela": cd, "cd": cd}
    rad = 1.0
    v |= {"milliradian": milli * rad, "mrad": milli * rad, "steradian": 1.0, "sr": 1.0}
    hz = 1.0 / s
    newton = m * kg / (s * s)
    pa = newton / (m * m)
    joule = newton * m
    watt = joule / s
    coulomb = a * s
    volt = joule / coulomb
    ohm = volt / a
    farad = coulomb / volt
    tesla = volt * s / (m * m)
    gauss = 1.0e-4 * tesla
    weber = volt * s
    lumen = cd * 1.0
    bq = 1.0 / s
    gray = joule / kg
    v |= {"hertz": hz, "Hz": hz, "newton": newton, "N": newton, "pascal": pa, "Pa": pa,
          "atmosphere": 101325.0 * pa, "atm": 101325.0 * pa, "bar": 100000 * pa,
          "joule": joule, "J": joule, "watt": watt, "W": watt, "coulomb": coulomb, "C": coulomb,
          "volt": volt, "V": volt, "ohm": ohm, "siemens": 1.0 / ohm, "S": 1.0 / ohm,
          "farad": farad, "F": farad, "tesla": tesla, "T": tesla, "gauss": gauss, "Gs": gauss,
          "weber": weber, "Wb": weber, "henry": weber / a, "H": weber / a,
          "lumen": lumen, "lm": lumen, "lux": lumen / (m * m), "lx": lumen / (m * m),
          "becquerel": bq, "Bq": bq, "kilobecquerel": kilo * bq, "kBq": kilo * bq,
          "megabecquerel": mega * bq, "MBq": mega * bq, "gigabecquerel": giga * bq, "GBq": giga * bq,
          "curie": 3.7e10 * bq, "Ci": 3.7e10 * bq, "millicurie": milli * 3.7e10 * bq,
          "mCi": milli * 3.7e10 * bq, "microcurie": micro * 3.7e10 * bq, "uCi": micro * 3.7e10 * bq,
          "gray": gray, "Gy": gray, "kilogray": kilo * gray, "milligray": milli * gray,
          "microgray": micro * gray, "sievert": gray, "Sv": gray}
    mm, cm, km = milli * m, centi * m, kilo * m
    v |= {"millimeter": mm, "mm": mm, "centimeter": cm, "cm": cm, "decimeter": deci * m,
          "kilometer": km, "km": km, "micrometer": micro * m, "micron": micro * m, "um": micro * m,
          "nanometer": nano * m, "nm": nano * m, "parsec": 3.0856775807e16 * m,
          "pc": 3.0856775807e16 * m, "angstrom": 1e-10 * m, "fermi": 1e-15 * m,
          "m2": m * m, "mm2": mm * mm, "cm2": cm * cm, "km2": km * km}
    barn = 1e-28 * m * m
    v |= {"barn": barn, "millibarn": milli * barn, "mbarn": milli * barn, "microbarn": micro * barn,
          "nanobarn": nano * barn, "picobarn": pico * barn,
          "m3": m**3, "mm3": mm**3, "cm3": cm**3, "cc": cm**3, "km3": km**3}
    liter = 1e-3 * m**3
    v |= {"liter": liter, "litre": liter, "L": liter, "centiliter": centi * liter,
          "cL": centi * liter, "milliliter": milli * liter, "mL": milli * liter,
          "diopter": 1.0 / m, "dioptre": 1.0 / m, "dpt": 1.0 / m}
    g = 0.001 * kg
    v |= {"gram": g, "g": g, "milligram": milli * g, "mg": milli * g,
          "millisecond": milli * s, "ms": milli * s, "microsecond": micro * s, "us": micro * s,
          "nanosecond": nano * s, "ns": nano * s, "picosecond": pico * s, "ps": pico * s,
          "minute": 60 * s, "hour": 3600 * s, "day": 86400 * s, "year": 365 * 86400 * s,
          "milliampere": milli * a, "mA": milli * a, "microampere": micro * a,
          "nanoampere": nano * a, "kilohertz": kilo * hz, "kHz": kilo * hz,
          "megahertz": mega * hz, "MHz": mega * hz, "kilonewton": kilo * newton, "kN": kilo * newton,
          "kilobar": kilo * 100000 * pa, "kbar": kilo * 100000 * pa,
          "millibar": milli * 100000 * pa, "mbar": milli * 100000 * pa,
          "kilojoule": kilo * joule, "kJ": kilo * joule, "megajoule": mega * joule,
          "MJ": mega * joule, "gigajoule": giga * joule, "GJ": giga * joule}
    ev = E_SI * coulomb * volt
    v |= {"electronvolt": ev, "eV": ev, "millielectronvolt": milli * ev,
          "kiloelectronvolt": kilo * ev, "keV": kilo * ev, "megaelectronvolt": mega * ev,
          "MeV": mega * ev, "gigaelectronvolt": giga * ev, "GeV": giga * ev,
          "teraelectronvolt": tera * ev, "TeV": tera * ev, "petaelectronvolt": peta * ev,
          "PeV": peta * ev,
          "kilowatt": kilo * watt, "kW": kilo * watt, "megawatt": mega * watt, "MW": mega * watt,
          "gigawatt": giga * watt, "GW": giga * watt, "kilovolt": kilo * volt, "kV": kilo * volt,
          "megavolt": mega * volt, "MV": mega * volt, "millifarad": milli * farad,
          "mF": milli * farad, "microfarad": micro * farad, "uF": micro * farad,
          "nanofarad": nano * farad, "nF": nano * farad, "picofarad": pico * farad,
          "pF": pico * farad, "kilogauss": kilo * gauss, "kGs": kilo * gauss}
    return v


#: Names Geant4's GDML evaluator defines; a <constant>/<variable> of the same name is a redefinition.
EVALUATOR_NAMES: Mapping[str, float] = MappingProxyType(_clhep_evaluator_names())

#: CLHEP physical constants Geant4's GDML evaluator does not define; usable, and a file may redefine them.
SOFT_NAMES: Mapping[str, float] = MappingProxyType({
    "twopi": 2 * _PI, "halfpi": _PI / 2, "pi2": _PI * _PI, "e_SI": E_SI, "eplus": EPLUS,
    "c_light": 299792458.0 * METER / SECOND, "c_squared": (299792458.0 * METER / SECOND) ** 2,
    "h_Planck": 6.62607015e-34 * JOULE * SECOND,
    "hbar_Planck": 6.62607015e-34 * JOULE * SECOND / (2 * _PI),
    "hbarc": 6.62607015e-34 * JOULE * SECOND / (2 * _PI) * 299792458.0 * METER / SECOND,
    "k_Boltzmann": 8.617333e-11 * MEV / KELVIN, "Avogadro": 6.02214076e23 / MOLE,
    "electron_mass_c2": 0.510998910 * MEV, "proton_mass_c2": 938.272013 * MEV,
    "amu_c2": 931.494028 * MEV, "universe_mean_density": 1.0e-25 * G_PER_CM3,
})


def _g4_units_table() -> dict[str, tuple[float, str]]:
    """``G4UnitDefinition::BuildUnitsTable``: name and symbol -> (value, category)."""
    v = EVALUATOR_NAMES
    rows: list[tuple[str, str, str, float]] = [
        ("parsec", "pc", "Length", v["parsec"]), ("kilometer", "km", "Length", v["km"]),
        ("meter", "m", "Length", v["m"]), ("centimeter", "cm", "Length", v["cm"]),
        ("millimeter", "mm", "Length", v["mm"]), ("micrometer", "um", "Length", v["um"]),
        ("nanometer", "nm", "Length", v["nm"]), ("angstrom", "Ang", "Length", v["angstrom"]),
        ("fermi", "fm", "Length", v["fermi"]),
        ("kilometer2", "km2", "Surface", v["km2"]), ("meter2", "m2", "Surface", v["m2"]),
        ("centimeter2", "cm2", "Surface", v["cm2"]), ("millimeter2", "mm2", "Surface", v["mm2"]),
        ("barn", "barn", "Surface", v["barn"]), ("millibarn", "mbarn", "Surface", v["millibarn"]),
        ("microbarn", "mubarn", "Surface", v["microbarn"]),
        ("nanobarn", "nbarn", "Surface", v["nanobarn"]), ("picobarn", "pbarn", "Surface", v["picobarn"]),
        ("kilometer3", "km3", "Volume", v["km3"]), ("meter3", "m3", "Volume", v["m3"]),
        ("centimeter3", "cm3", "Volume", v["cm3"]), ("millimeter3", "mm3", "Volume", v["mm3"]),
        ("liter", "L", "Volume", v["L"]), ("dL", "dL", "Volume", 0.1 * v["L"]),
        ("cL", "cL", "Volume", v["cL"]), ("mL", "mL", "Volume", v["mL"]),
        ("radian", "rad", "Angle", 1.0), ("milliradian", "mrad", "Angle", 1e-3),
        ("degree", "deg", "Angle", v["deg"]), ("steradian", "sr", "Solid angle", 1.0),
        ("millisteradian", "msr", "Solid angle", 1e-3),
        ("second", "s", "Time", v["s"]), ("millisecond", "ms", "Time", v["ms"]),
        ("microsecond", "us", "Time", v["us"]), ("nanosecond", "ns", "Time", v["ns"]),
        ("picosecond", "ps", "Time", v["ps"]), ("minute", "min", "Time", v["minute"]),
        ("hour", "h", "Time", v["hour"]), ("day", "d", "Time", v["day"]),
        ("year", "y", "Time", v["year"]),
        ("hertz", "Hz", "Frequency", v["Hz"]), ("kilohertz", "kHz", "Frequency", v["kHz"]),
        ("megahertz", "MHz", "Frequency", v["MHz"]),
        ("cm/ns", "cm/ns", "Velocity", v["cm"] / v["ns"]), ("mm/ns", "mm/ns", "Velocity", 1.0),
        ("cm/us", "cm/us", "Velocity", v["cm"] / v["us"]), ("km/s", "km/s", "Velocity", v["km"] / v["s"]),
        ("cm/ms", "cm/ms", "Velocity", v["cm"] / v["ms"]), ("m/s", "m/s", "Velocity", v["m"] / v["s"]),
        ("cm/s", "cm/s", "Velocity", v["cm"] / v["s"]), ("mm/s", "mm/s", "Velocity", v["mm"] / v["s"]),
        ("eplus", "e+", "Electric charge", EPLUS), ("coulomb", "C", "Electric charge", v["C"]),
        ("electronvolt", "eV", "Energy", v["eV"]), ("kiloelectronvolt", "keV", "Energy", v["keV"]),
        ("megaelectronvolt", "MeV", "Energy", v["MeV"]),
        ("gigaelectronvolt", "GeV", "Energy", v["GeV"]),
        ("teraelectronvolt", "TeV", "Energy", v["TeV"]),
        ("petaelectronvolt", "PeV", "Energy", v["PeV"]),
        ("millielectronVolt", "meV", "Energy", v["millielectronvolt"]),
        ("joule", "J", "Energy", v["J"]),
        ("eV/c", "eV/c", "Momentum", v["eV"]), ("keV/c", "keV/c", "Momentum", v["keV"]),
        ("MeV/c", "MeV/c", "Momentum", v["MeV"]), ("GeV/c", "GeV/c", "Momentum", v["GeV"]),
        ("TeV/c", "TeV/c", "Momentum", v["TeV"]),
        ("GeV/cm", "GeV/cm", "Energy/Length", v["GeV"] / v["cm"]),
        ("MeV/cm", "MeV/cm", "Energy/Length", v["MeV"] / v["cm"]),
        ("keV/cm", "keV/cm", "Energy/Length", v["keV"] / v["cm"]),
        ("eV/cm", "eV/cm", "Energy/Length", v["eV"] / v["cm"]),
        ("milligram", "mg", "Mass", v["mg"]), ("gram", "g", "Mass", v["g"]),
        ("kilogram", "kg", "Mass", v["kg"]),
        ("g/cm3", "g/cm3", "Volumic Mass", v["g"] / v["cm3"]),
        ("mg/cm3", "mg/cm3", "Volumic Mass", v["mg"] / v["cm3"]),
        ("kg/m3", "kg/m3", "Volumic Mass", v["kg"] / v["m3"]),
        ("g/cm2", "g/cm2", "Mass/Surface", v["g"] / v["cm2"]),
        ("mg/cm2", "mg/cm2", "Mass/Surface", v["mg"] / v["cm2"]),
        ("kg/cm2", "kg/cm2", "Mass/Surface", v["kg"] / v["cm2"]),
        ("cm2/g", "cm2/g", "Surface/Mass", v["cm2"] / v["g"]),
        ("eV*cm2/g", "eV*cm2/g", "Energy*Surface/Mass", v["eV"] * v["cm2"] / v["g"]),
        ("keV*cm2/g", "keV*cm2/g", "Energy*Surface/Mass", v["keV"] * v["cm2"] / v["g"]),
        ("MeV*cm2/g", "MeV*cm2/g", "Energy*Surface/Mass", v["MeV"] * v["cm2"] / v["g"]),
        ("GeV*cm2/g", "GeV*cm2/g", "Energy*Surface/Mass", v["GeV"] * v["cm2"] / v["g"]),
        ("watt", "W", "Power", v["W"]), ("newton", "N", "Force", v["N"]),
        ("pascal", "Pa", "Pressure", v["Pa"]), ("bar", "bar", "Pressure", v["bar"]),
        ("atmosphere", "atm", "Pressure", v["atm"]),
        ("ampere", "A", "Electric current", v["A"]), ("milliampere", "mA", "Electric current", v["mA"]),
        ("microampere", "muA", "Electric current", v["microampere"]),
        ("nanoampere", "nA", "Electric current", v["nanoampere"]),
        ("volt", "V", "Electric potential", v["V"]), ("kilovolt", "kV", "Electric potential", v["kV"]),
        ("megavolt", "MV", "Electric potential", v["MV"]),
        ("volt/m", "V/m", "Electric field", v["V"] / v["m"]),
        ("kilovolt/m", "kV/m", "Electric field", v["kV"] / v["m"]),
        ("megavolt/m", "MV/m", "Electric field", v["MV"] / v["m"]),
        ("weber", "Wb", "Magnetic flux", v["Wb"]), ("tesla", "T", "Magnetic flux density", v["T"]),
        ("kilogauss", "kG", "Magnetic flux density", v["kGs"]),
        ("gauss", "G", "Magnetic flux density", v["Gs"]),
        ("kelvin", "K", "Temperature", KELVIN), ("mole", "mol", "Amount of substance", MOLE),
        ("g/mole", "g/mol", "Molar mass", v["g"] / MOLE),
        ("becquerel", "Bq", "Activity", v["Bq"]), ("curie", "Ci", "Activity", v["Ci"]),
        ("gray", "Gy", "Dose", v["Gy"]),
    ]
    table: dict[str, tuple[float, str]] = {}
    for name, symbol, category, value in rows:
        table.setdefault(name, (value, category))
        table.setdefault(symbol, (value, category))
        _SYMBOLS.setdefault(category, []).append(symbol)
    return table


_SYMBOLS: dict[str, list[str]] = {}

#: G4UnitsTable: name or symbol -> (value in internal units, category).
UNITS_TABLE: Mapping[str, tuple[float, str]] = MappingProxyType(_g4_units_table())


def unit_symbols(category: str) -> str:
    """The symbols of one G4UnitsTable category, for error messages (``"pc, km, m, cm, mm, ..."``)."""
    return ", ".join(_SYMBOLS.get(category, []))


assert math.isclose(EVALUATOR_NAMES["eV"], 1e-6)
assert math.isclose(UNITS_TABLE["g/cm3"][0], G_PER_CM3)
